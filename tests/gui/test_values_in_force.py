"""The window shows what is in force: the max new tokens a run really got, a memory-hungry option
that does not come back unannounced after a restart, and a prompt count of what was typed."""

from opt_desktop.engine import GenerationSettings
from opt_desktop.gui.app_state import AppState, state_path
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.presets import PresetStore
from window_driver import new_window, run_until


def test_max_new_tokens_shows_the_value_the_run_got(make_window, loop):
    w = make_window()
    ctx = w.controller.model.context_length
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=2048))
    w.prompt.set_text("Hello there")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None)
    trace = w.presenter.trace
    in_force = trace.started.max_new_tokens
    assert in_force == ctx - trace.n_prompt < 2048
    assert f"lowered from 2048 to {in_force}" in w.banner.text()
    assert w.settings_panel.field("max_new_tokens").value() == in_force  # the control says what the notice says
    assert w.settings_panel.settings().max_new_tokens == in_force
    w.runs.stop()
    run_until(loop, lambda: trace.finished is not None and not w.controller.is_busy)


def test_a_value_that_fits_is_left_as_it_is(make_window, loop):
    w = make_window()
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=3))
    w.prompt.set_text("Hello there")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None and w.presenter.trace.finished is not None)
    assert w.settings_panel.field("max_new_tokens").value() == 3 and w.presenter.trace.started.max_new_tokens == 3


def test_keep_full_attention_rows_is_off_at_each_start_and_says_so(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    action = w.actions_.keep_rows
    assert not action.isChecked() and "off at each start" in action.text().replace("&", "")
    action.trigger()
    assert action.isChecked() and w.runs._inspect().keep_attention_rows
    assert "T²" in w.statusBar().currentMessage() and "restarts" in w.statusBar().currentMessage()
    w.close()
    w.state.save()  # whatever the window remembers is on disk, as after a quit

    again = MainWindow(state=AppState.load(), presets=PresetStore(tmp_path / "presets"))  # the next start
    qtbot.addWidget(again)
    assert not again.actions_.keep_rows.isChecked() and not again.runs._inspect().keep_attention_rows
    assert "keep_attention_rows" not in state_path().read_text(encoding="utf-8")
    again.close()


def test_an_empty_prompt_counts_no_tokens(make_window, loop):
    w = make_window()
    ctx = w.controller.model.context_length
    w.prompt.set_text("")
    run_until(loop, lambda: w.prompt.counter.text() == f"0 / {ctx} tokens")
    assert "</s>" in w.prompt.counter.toolTip()
    typed = w.controller.engine.count_tokens_later("Hello world").result(10) - 1  # the engine counts </s> too
    w.prompt.set_text("Hello world")
    run_until(loop, lambda: w.prompt.counter.text() == f"{typed} / {ctx} tokens")
