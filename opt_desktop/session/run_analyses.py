"""What was computed on a run after it was made and is kept with it (saved in its session file): the
logit lens of every position, head importance, attributions and activation patching. `RunTrace` holds
these methods; they read the run's tokens and shape and its list of `analyses`."""

from __future__ import annotations

import numpy as np

from ..engine.messages.events import LensResult
from ..engine.messages.results import Attribution, HeadImportance, LensTable, Patching
from .analyses import (
    ATTRIBUTION,
    HEAD_IMPORTANCE,
    LENS,
    PATCHING,
    attribution_analysis,
    attribution_from,
    importance_analysis,
    importance_from,
    lens_analysis,
    lens_from,
    patching_analysis,
    patching_from,
)


class RunAnalyses:
    """Mixin of RunTrace (which sets `analyses`, the run's tokens, `n_layers`, `n_heads`, `n_prompt`…)."""

    def lens_request(self) -> dict:
        """Keyword arguments of engine.lens_table.lens_table for this run: its tokens and its own
        interventions (hidden positions, head masks and where they changed)."""
        return {"token_ids": tuple(self.token_ids), "hidden_positions": tuple(self.started.hidden_positions),
                "mask_schedule": self.mask_schedule()}

    def lens_table(self) -> LensTable | None:
        """The stored logit lens of every position, when it was computed (and covers this run)."""
        for analysis in self.analyses:
            if analysis.kind == LENS:
                table = lens_from(analysis)
                if table.n_positions == self.length and table.n_rows == self.n_layers + 1:
                    return table
        return None

    def set_lens_table(self, table: LensTable) -> None:
        """Keep `table` (from engine.lens_table for this run's tokens) with the run, replacing any other."""
        if table.n_positions != self.length or table.n_rows != self.n_layers + 1:
            raise ValueError(f"the lens table covers {table.n_rows} rows and {table.n_positions} positions, "
                             f"this run has {self.n_layers + 1} rows and {self.length} positions")
        self.analyses = [a for a in self.analyses if a.kind != LENS] + [lens_analysis(table)]

    def lens_at(self, position: int) -> LensResult | None:
        """The stored lens at `position` as the lens view shows it; None without a stored table."""
        table = self.lens_table()
        if table is None or not 0 <= position < self.length:
            return None
        known = {**self.known_pieces(), **table.pieces}
        ids = table.top_ids[:, position]
        pieces = tuple(tuple(known.get(int(i), f"#{int(i)}") for i in row) for row in ids.tolist())
        return LensResult(position=position, top_ids=ids.copy(), top_probs=table.top_probs[:, position].copy(),
                          top_pieces=pieces, target_id=self.next_token(position),
                          target_logprob=table.target_logprob[:, position].copy())

    def lens_ranks(self, position: int) -> np.ndarray | None:
        """(L+1,) 1-based rank per row of the token that came after `position` (0: none), when stored."""
        table = self.lens_table()
        if table is None or not 0 <= position < self.length:
            return None
        return table.target_rank[:, position].copy()

    def head_importances(self) -> list[HeadImportance]:
        """Stored head-importance results, one per scale, in the order they were added."""
        return [importance_from(a) for a in self.analyses if a.kind == HEAD_IMPORTANCE]

    def add_head_importance(self, result: HeadImportance) -> None:
        """Keep a head-importance result with the run; it replaces an earlier one of the same scale."""
        if result.delta.shape != (self.n_layers, self.n_heads):
            raise ValueError(f"the head-importance map is {result.delta.shape}, this run's model has "
                             f"{self.n_layers} layers of {self.n_heads} heads")
        if result.n_prompt != self.n_prompt:
            raise ValueError(f"the head-importance result is for a prompt of {result.n_prompt} tokens, "
                             f"this run's has {self.n_prompt}")
        kept = [a for a in self.analyses
                if not (a.kind == HEAD_IMPORTANCE and float(a.params.get("scale", -1)) == float(result.scale))]
        self.analyses = kept + [importance_analysis(result)]

    def attributions(self) -> list[tuple[int, Attribution]]:
        """Stored attributions: (position of the explained token, result), in the order they were added."""
        return [attribution_from(a, self.token_ids) for a in self.analyses if a.kind == ATTRIBUTION]

    def add_attribution(self, result: Attribution, position: int) -> None:
        """Keep the attribution of the token at `position`; it replaces an earlier one of that token."""
        if not 1 <= position < self.length or len(result.scores) != position:
            raise ValueError(f"an attribution of {len(result.scores)} tokens does not explain position {position}")
        kept = [a for a in self.analyses if not (a.kind == ATTRIBUTION and a.params.get("position") == position)]
        self.analyses = kept + [attribution_analysis(result, position)]

    def patchings(self) -> list[Patching]:
        """Stored activation patching from this run's prompt into corrupted prompts."""
        clean = self.token_ids[: self.n_prompt]
        return [patching_from(a, clean) for a in self.analyses if a.kind == PATCHING]

    def add_patching(self, result: Patching, corrupt_label: str = "") -> None:
        if list(result.clean_ids) != self.token_ids[: self.n_prompt]:
            raise ValueError("a patching result is kept with the run whose prompt was the clean one")
        self.analyses = self.analyses + [patching_analysis(result, corrupt_label)]
