"""One head's attention matrix computed after a run (analyses/head_rows.py) equals the rows the run
kept, on both families, under a head mask changed mid-run and a hidden position, whatever chunks the
pass is fed in (a chunk of one query goes through eager attention, the others through SDPA)."""

import numpy as np
import pytest

from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadScale, InspectSettings
from opt_desktop.engine.analyses.head_rows import head_rows
from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.messages.events import TokenGenerated
from opt_desktop.session import RunTrace


def test_head_rows_equal_the_rows_a_run_keeps(engine):
    events = []
    mask = (HeadScale(layer=0, head=1, scale=0.0),)

    def change_mask(event):  # from the 4th generated token on, head L0H1 is ablated
        events.append(event)
        if isinstance(event, TokenGenerated) and event.index == 3:
            engine.set_head_mask(mask)

    request = GenerationRequest(prompt="The cat sat on the mat and", hidden_positions=(2,),
                                settings=GenerationSettings(max_new_tokens=12),
                                inspect=InspectSettings(keep_attention_rows=True))
    engine.generate(request, change_mask).result(60)
    trace = RunTrace(events[0])
    for event in events[1:]:
        trace.apply(event)
    ask = trace.lens_request()
    assert len(ask["mask_schedule"]) == 2  # the mask did change mid-run
    T = trace.length
    for layer, head in ((1, 0), (0, 1)):
        kept = trace.attention_matrix(layer, head)
        for chunk in (64, 5, 1):
            rows = engine.call(lambda loaded: head_rows(loaded, ask["token_ids"], layer, head, chunk=chunk,
                                                        hidden_positions=ask["hidden_positions"],
                                                        mask_schedule=ask["mask_schedule"])).result(60)
            assert rows.shape == (T, T) and np.isnan(rows[np.triu_indices(T, 1)]).all()
            # The last token was never fed during the run: its row is the pass's alone.
            np.testing.assert_allclose(rows[:-1], kept[:-1], atol=2e-3, equal_nan=True)
            np.testing.assert_allclose(rows[-1, :T].sum(), 1.0, rtol=1e-5)


def test_a_head_the_model_lacks_is_one_line(engine):
    with pytest.raises(SettingsError, match="has no head L9H0"):
        engine.call(lambda loaded: head_rows(loaded, (2, 100, 200), 9, 0)).result(60)
