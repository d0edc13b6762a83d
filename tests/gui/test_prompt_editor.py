"""PromptEditor: text in and out, the debounced token counter and its over-context warning."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from opt_desktop.gui.widgets.prompt_editor import PLACEHOLDER, PromptEditor
from shown import shown_tip


class Counter:
    """A stand-in tokenizer: one token per word plus the leading </s>, as the engine counts; records its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        return len(text.split()) + 1


def make(qtbot) -> PromptEditor:
    editor = PromptEditor()
    qtbot.addWidget(editor)
    editor.show()
    qtbot.waitExposed(editor)
    return editor


def test_text_round_trips_and_signals(qtbot):
    editor = make(qtbot)
    assert editor.edit.placeholderText() == PLACEHOLDER
    with qtbot.waitSignal(editor.text_changed, timeout=1000):
        editor.set_text("Hello\nworld")
    assert editor.text() == "Hello\nworld"


def test_no_counter_shows_a_dash(qtbot):
    editor = make(qtbot)
    editor.set_text("some words")
    assert editor.counter.text() == "– tokens"
    assert editor.token_count() is None and not editor.is_over_context()


def test_count_shows_after_the_debounce(qtbot):
    editor = make(qtbot)
    count = Counter()
    editor.set_counter(count, 2048)
    assert editor.counter.text() == "0 / 2048 tokens"  # counted at once for the new model
    calls = count.calls
    qtbot.keyClicks(editor.edit, "one two three")
    assert count.calls == calls  # typing alone does not tokenise on every key
    qtbot.waitUntil(lambda: editor.counter.text() == "3 / 2048 tokens", timeout=2000)
    assert count.calls == calls + 1  # one count for the whole burst of typing


def test_the_count_is_of_what_was_typed_and_says_that_a_start_token_is_added(qtbot):
    editor = make(qtbot)
    editor.set_counter(Counter(), 256)  # the model reads </s> + the prompt
    assert editor.counter.text() == "0 / 256 tokens" and editor.token_count() == 0  # nothing typed
    assert "start-of-text token </s> before the prompt" in shown_tip(editor.counter.toolTip())  # not read as markup
    editor.set_text("two words")
    qtbot.waitUntil(lambda: editor.token_count() == 2, timeout=2000)
    assert editor.counter.text() == "2 / 256 tokens" and "</s>" in editor.counter.toolTip()
    editor.set_counter(Counter(), None)
    assert editor.counter.text() == "2 tokens" and "</s>" in editor.counter.toolTip()


def test_over_context_warns(qtbot):
    editor = make(qtbot)
    editor.set_counter(Counter(), 4)  # </s> and three more tokens; the engine refuses a prompt that fills it
    editor.set_text("a b")
    qtbot.waitUntil(lambda: editor.token_count() == 2, timeout=2000)
    assert not editor.is_over_context() and not editor.counter.font().bold()
    assert editor.counter.text() == "2 / 4 tokens"
    editor.set_text("a b c")  # </s> a b c: no room left for one new token
    qtbot.waitUntil(lambda: editor.token_count() == 3, timeout=2000)
    assert editor.is_over_context() and editor.counter.text() == "3 / 4 tokens ⚠ no room left for an answer"
    editor.set_text("a b c d e")
    qtbot.waitUntil(lambda: editor.token_count() == 5, timeout=2000)
    assert editor.is_over_context()
    assert editor.counter.text() == "5 / 4 tokens ⚠ 2 over the model's context"
    assert editor.counter.font().bold()
    editor.set_text("a")
    qtbot.waitUntil(lambda: not editor.is_over_context(), timeout=2000)
    assert not editor.counter.font().bold()


def test_unknown_context_and_unloading(qtbot):
    editor = make(qtbot)
    editor.set_text("a b")
    editor.set_counter(Counter(), None)
    assert editor.counter.text() == "2 tokens"
    editor.set_counter(None, None)  # model unloaded
    assert editor.counter.text() == "– tokens"


def test_a_failing_counter_does_not_break_typing(qtbot):
    editor = make(qtbot)

    def broken(text):
        raise RuntimeError("tokenizer exploded")

    editor.set_counter(broken, 2048)
    editor.set_text("hello")
    qtbot.wait(200)
    assert editor.counter.text() == "– tokens" and editor.text() == "hello"


def test_focus_goes_to_the_text(qtbot):
    editor = make(qtbot)
    editor.activateWindow()
    editor.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is editor.edit, timeout=2000)
    assert editor.focusProxy() is editor.edit
