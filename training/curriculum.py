"""The curriculum of a demo-model run: its phases (what kind of batch, at what learning rate, for how
many steps), the batches each phase draws, and the rules for giving a resumed run a new plan."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

BOS = 2  # OPT's </s>, which starts every row
STYLES = ("fill", "insert", "noise", "skip")  # the kinds of copy row; Batches has a `_<style>_row` for each


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one kind of batch: rows of `context` tokens, `copy` of the `batch`
    rows a repeated random sequence (period in `period`), the rest windows of the text; and its
    learning rate: `lr` on the whole run's cosine ('run'), held ('constant'), or decayed over this
    phase alone ('cosine'). The last two depend on nothing after the phase, so a run can be given
    more phases later (--replan) without changing the steps already taken."""
    steps: int
    context: int
    batch: int
    copy: int
    period: tuple[int, int] = (8, 48)
    lr: float = 2e-3
    schedule: str = "run"
    style: str = "fill"


def phases(args) -> list[Phase]:
    """The phases of --phase (or one phase of the plain settings), checked."""
    if not args.phase:
        return [Phase(args.steps, args.context, args.batch, args.induction_rows, lr=args.lr)]
    out = []
    for spec in args.phase:
        f = dict(item.split("=", 1) for item in spec.split(","))
        lo, hi = (int(v) for v in f.get("period", "8-48").split("-"))
        ph = Phase(int(f["steps"]), int(f.get("context", args.context)), int(f.get("batch", args.batch)),
                   int(f.get("copy", args.induction_rows)), (lo, hi), float(f.get("lr", args.lr)),
                   f.get("schedule", "run"), f.get("style", "fill"))
        styles = ph.style.split("+")
        if not (ph.context <= args.context and 0 <= ph.copy <= ph.batch and 1 <= lo <= hi < ph.context - 1
                and ph.schedule in ("run", "constant", "cosine") and set(styles) <= set(STYLES)
                and ({"insert", "noise"}.isdisjoint(styles) or 2 * hi < ph.context - 1) and set(f) <= set(Phase.__dataclass_fields__)):
            raise SystemExit(f"bad phase {spec!r}")
        out.append(ph)
    return out


def locate(step: int, plan: list[Phase]) -> tuple[Phase, int]:
    """The phase of `step` and how many of its steps came before."""
    for ph in plan:
        if step < ph.steps:
            return ph, step
        step -= ph.steps
    return plan[-1], plan[-1].steps


def phase_at(step: int, plan: list[Phase]) -> Phase:
    return locate(step, plan)[0]


def done_part(plan: list[Phase], step: int) -> list[Phase]:
    """The phases as far as `step` got: those finished, and the current one cut at `step`."""
    out = []
    for ph in plan:
        if step <= 0:
            break
        out.append(ph if step >= ph.steps else Phase(**(asdict(ph) | {"steps": step})))
        step -= ph.steps
    return out


class Batches:
    """Rows of </s> + a window of the training stream at a random offset; the phase's `copy` rows of
    each batch also hold a random sequence of ordinary tokens (length in `period`) more than once:

    - 'fill': the row is the sequence repeated back to back, scored after its first copy. The next
      token always sits one period back, so a model can get far on a positional shortcut (attend
      8-24 back, boost those tokens) and never form an induction head;
    - 'insert': a text window with the sequence written over it twice, at random places, so the
      distance between the copies varies over the whole row and only matching content (an
      induction head) predicts the second copy. The text around is scored as usual; the first copy
      and the second copy's first token (unpredictable) are not;
    - 'noise': the same, written over random ordinary tokens instead of text, and every token scored.
      Only the second copy can be predicted, and only by matching content; elsewhere a head that
      looks for an earlier copy finds none and is best parked on position 0 (the hope was that this
      would grow sinks too: in tries n1, n2 and p1 it did not, see training/README.md);
    - 'skip': random ordinary tokens in threes, the third of each equal to the first ("a b a c d c"),
      every token scored. Only the third can be predicted, and only by attending to the previous
      token and copying it: it grows the previous-token head that an induction head builds on,
      while no shortcut (the tokens in context, the one seen longest ago) helps.

    Every draw comes from the one generator `g`, whose state the checkpoints keep: a resumed run
    draws the same batches as an uninterrupted one."""

    def __init__(self, stream: torch.Tensor, plan: list[Phase], vocab_size: int, generator: torch.Generator):
        self.stream, self.plan, self.vocab, self.g = stream, plan, vocab_size, generator

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ph = phase_at(step, self.plan)
        n, copies = ph.context - 1, ph.copy
        starts = torch.randint(0, len(self.stream) - n, (ph.batch - copies,), generator=self.g)
        rows = [torch.cat([torch.tensor([BOS]), self.stream[s:s + n]]) for s in starts.tolist()]
        labels = [r.clone() for r in rows]
        styles = ph.style.split("+")  # 'noise+skip': the copy rows shared between styles, in order
        for i, style in enumerate(styles):
            for _ in range(copies // len(styles) + (i < copies % len(styles))):
                row, label = getattr(self, f"_{style}_row")(n, ph.period)
                rows.append(row)
                labels.append(label)
        return torch.stack(rows), torch.stack(labels)

    def _skip_row(self, n: int, period_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        row = torch.cat([torch.tensor([BOS]), torch.randint(4, self.vocab, (n,), generator=self.g)])
        row[3::3] = row[1:-2:3][: len(row[3::3])]
        return row, row.clone()  # (the period plays no part: every skip row has the same shape)

    def _noise_row(self, n: int, period_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._insert_row(n, period_range, noise=True)

    def _insert_row(self, n: int, period_range: tuple[int, int], noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = period_range
        length = int(torch.randint(lo, hi + 1, (1,), generator=self.g))
        seq = torch.randint(4, self.vocab, (length,), generator=self.g)
        s = int(torch.randint(0, len(self.stream) - n, (1,), generator=self.g))
        row = torch.cat([torch.tensor([BOS]), self.stream[s:s + n]])
        # first copy at a, second at b: 1 <= a, a + length <= b, b + length <= n + 1 (row index)
        gap = int(torch.randint(0, n - 2 * length + 1, (1,), generator=self.g))
        a = 1 + int(torch.randint(0, n - 2 * length - gap + 1, (1,), generator=self.g))
        b = a + length + gap
        if noise:
            row[1:] = torch.randint(4, self.vocab, (n,), generator=self.g)
        row[a:a + length] = seq
        row[b:b + length] = seq
        label = row.clone()
        if noise:
            return row, label
        label[a:a + length] = -100
        label[b] = -100
        return row, label

    def _fill_row(self, n: int, period_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """</s> + a random sequence of ordinary tokens repeated to length n."""
        lo, hi = period_range
        period = int(torch.randint(lo, hi + 1, (1,), generator=self.g))
        seq = torch.randint(4, self.vocab, (period,), generator=self.g)
        row = torch.cat([torch.tensor([BOS]), seq.repeat(n // period + 1)[:n]])
        label = row.clone()
        label[: 1 + period] = -100  # the first copy is unpredictable noise: no loss there
        return row, label


def lr_at(step: int, args) -> float:
    """Linear warm-up, then the phase's learning rate: by default a cosine decay over the whole run
    to a tenth of the peak; or held; or a cosine over the phase alone."""
    ph, k = locate(step, args.phases)
    if step < args.warmup:
        return ph.lr * (step + 1) / args.warmup
    if ph.schedule == "run":
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
    elif ph.schedule == "cosine":
        t = k / max(1, ph.steps - 1)
    else:
        t = 0.0
    return ph.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def check_replan(before: list[Phase], after: list[Phase], step: int, total_changed: bool) -> None:
    """A new plan may only change what has not run yet: the same phases up to `step`, and no learning
    rate already used that depended on the parts that change (the whole run's cosine, or the
    cosine of the phase that is cut or extended)."""
    done = done_part(before, step)
    if done != done_part(after, step):
        raise SystemExit(f"--replan: the first {step} steps would change: {done} vs {done_part(after, step)}")
    cur_before, k = locate(step, before)
    cur_after, _ = locate(step, after)
    if total_changed and any(ph.schedule == "run" for ph in done):
        raise SystemExit("--replan: the steps already run used the whole run's cosine, which depends on its length")
    if 0 < k < cur_before.steps and cur_before.schedule == "cosine" and cur_before.steps != cur_after.steps:
        raise SystemExit("--replan: the current phase's cosine depends on its length")
