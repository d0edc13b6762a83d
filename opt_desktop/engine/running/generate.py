"""One generation run: transformers' `generate` with capture hooks, turned into plain events."""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .attention import new_cache
from .capture import Capture, distribution_stats
from ..messages.errors import EngineError, JobCancelled, PromptError
from ..messages.job_context import JobContext
from ..messages.events import Finished, HeadMaskChanged, Notice, PromptScored, Started, TokenGenerated
from .interventions import HeadMask, attention_inputs
from ..messages.interventions_spec import check_head_mask, check_hidden_positions, mask_triples, normalize_head_mask
from .loaded import LoadedModel
from .memory import memory_in_use
from ..messages.errors import describe_error
from ..messages.settings import GenerationRequest, HeadScale
from .stopping import StopBetweenLayers
from .text import IncrementalDecoder, token_piece

MaskSource = Callable[[], tuple[HeadScale, ...] | None]  # polled between steps: a new head mask, or None


class _StepObserver(StoppingCriteria):
    """Called by `generate` right after each new token: turns the step into events, and honours Stop.

    Stopping criteria run after every step and before the next forward, which is exactly where a
    Stop, or a head mask changed during the run, must take effect.
    """

    def __init__(self, run: "_Run"):
        self.run = run

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.run.on_token(int(input_ids[0, -1]))
        self.run.between_steps()
        self.run.apply_mask_change()
        stop = self.run.job.stopped
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _Run:
    def __init__(self, loaded: LoadedModel, request: GenerationRequest, job: JobContext,
                 between_steps: Callable[[], None] = lambda: None,
                 mask_change: MaskSource = lambda: None):
        self.between_steps = between_steps
        self.mask_change = mask_change
        self.loaded = loaded
        self.request = request
        self.job = job
        self.emit = job.emit
        self.tokenizer = loaded.tokenizer
        self.info = loaded.info
        self.generated: list[int] = []
        self.decoder = IncrementalDecoder(self.tokenizer)
        self.text_parts: list[str] = []
        self.t0 = 0.0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.capture: Capture | None = None
        self.head_mask: HeadMask | None = None
        self.n_prompt = 0
        self.max_new = 0
        self.started = False  # Started was emitted: from then on the run must end with a Finished

    # --- set-up -------------------------------------------------------------------------------

    def prompt_ids(self) -> list[int]:
        req = self.request
        if req.prompt_ids is not None:
            ids = list(req.prompt_ids)
        else:
            ids = self.tokenizer(req.prompt)["input_ids"]
        if not ids or ids[0] != self.info.bos_token_id:
            ids = [self.info.bos_token_id] + ids  # OPT was trained with </s> first
        bad = [i for i in ids if not 0 <= i < self.info.vocab_size]
        if bad:
            raise PromptError(f"Token id {bad[0]} is outside this model's vocabulary of {self.info.vocab_size}.")
        return ids

    def run(self) -> Finished:
        settings = self.request.settings
        ids = self.prompt_ids()
        P = self.n_prompt = len(ids)
        ctx = self.info.context_length
        if P >= ctx:
            raise PromptError(
                f"The prompt is {P:,} tokens long, but {self.info.label} reads at most {ctx:,}: "
                "shorten it to leave room for the answer."
            )
        notices = []
        if P == 1:
            notices.append("Generating from the start-of-text token alone: the prompt is empty.")
        elif self.request.prompt_ids is None and not self.request.prompt.strip():
            notices.append("The prompt is only blank space: generating from it after the start-of-text token.")
        max_new = settings.max_new_tokens
        if P + max_new > ctx:
            max_new = ctx - P
            notices.append(f"Max new tokens lowered from {settings.max_new_tokens} to {max_new}: "
                           f"the prompt ({P} tokens) and the answer must fit in the context of {ctx}.")
        self.max_new = max_new
        mask = normalize_head_mask(self.request.head_mask)
        check_head_mask(mask, self.info.n_layers, self.info.n_heads, self.info.label)
        hidden = check_hidden_positions(self.request.hidden_positions, P)
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        torch.manual_seed(seed)

        gc = settings.replace(max_new_tokens=max_new).to_generation_config(
            eos_token_id=self.info.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.info.bos_token_id)
        device = self.loaded.device
        input_ids = torch.tensor([ids], device=device)
        self.emit(Started(
            model=self.info, prompt=self.request.prompt, prompt_ids=tuple(ids),
            prompt_pieces=tuple(token_piece(self.tokenizer, i) for i in ids), max_new_tokens=max_new, seed=seed,
            settings=settings.model_dump(), inspect=self.request.inspect.model_dump(), notices=tuple(notices),
            head_mask=mask_triples(mask), hidden_positions=hidden))
        self.started = True
        for message in notices:
            self.emit(Notice(message))

        cancelled = False
        self.t0 = time.perf_counter()
        # generate extends the mask with ones for new tokens, so hidden positions stay hidden throughout.
        attention_mask, position_ids = attention_inputs(P, hidden, device)
        kwargs = dict(generation_config=gc, stopping_criteria=StoppingCriteriaList([_StepObserver(self)]),
                      attention_mask=attention_mask)
        # transformers' DynamicCache copies itself at every token; this one grows in place (same numbers).
        kwargs["cache"] = new_cache(self.loaded.model.config)
        if position_ids is not None:
            kwargs["position_ids"] = position_ids  # generate continues them one by one
        if settings.stop_strings:
            kwargs["tokenizer"] = self.tokenizer
        model = self.loaded.model
        with torch.inference_mode(), HeadMask(model, mask) as head_mask, StopBetweenLayers(model, self.job), \
                Capture(model, self.request.inspect, input_ids[0], self.job) as capture:
            self.capture = capture
            self.head_mask = head_mask
            try:
                model.generate(input_ids, **kwargs)
            except JobCancelled:
                cancelled = True
        cancelled = cancelled or self.job.stopped
        return self.finish("cancelled" if cancelled else None)

    # --- per token ----------------------------------------------------------------------------

    def on_token(self, token_id: int) -> None:
        now = time.perf_counter()
        cap = self.capture
        index = len(self.generated)
        position = self.n_prompt + index
        K = self.request.inspect.top_alternatives
        ent, tgt, rank, top_lp, top_ids = distribution_stats(
            cap.last_logits, torch.tensor(token_id, device=cap.last_logits.device), K)
        scalars = torch.stack([ent, tgt, rank.float()]).tolist()
        top_probs = top_lp.exp().tolist()
        top_ids = top_ids.tolist()
        # The first token's step was the prefill: its statistics are the prompt's, reported after it.
        fed = cap.take_step(start=position - 1) if index else None
        if index == 0:
            self.t_first = now
        self.t_last = now
        self.generated.append(token_id)
        text = self.decoder.push(token_id)
        self.text_parts.append(text)
        self.emit(TokenGenerated(
            index=index, position=position, token_id=token_id, piece=token_piece(self.tokenizer, token_id),
            text=text, logprob=scalars[1], rank=int(scalars[2]), entropy=scalars[0], top_ids=tuple(top_ids),
            top_probs=tuple(top_probs), top_pieces=tuple(token_piece(self.tokenizer, i) for i in top_ids),
            elapsed_s=now - self.t0, fed=fed))
        if index == 0:
            self.score_prompt()

    def score_prompt(self) -> None:
        """The prompt's statistics, once its first token is out: they are not on the way to it."""
        cap = self.capture
        cap.finish_prompt()
        fed = cap.take_step(start=0)
        logprob, entropy, ranks, p_top_ids, p_top_probs = cap.prompt_scores
        alt_pieces = {int(i): token_piece(self.tokenizer, int(i)) for i in np.unique(p_top_ids[1:])}
        self.emit(PromptScored(alternative_pieces=alt_pieces, logprob=logprob, entropy=entropy, rank=ranks,
                               top_ids=p_top_ids, top_probs=p_top_probs, fed=fed,
                               elapsed_s=time.perf_counter() - self.t0))

    def apply_mask_change(self) -> None:
        """Between steps: switch to a head mask set during the run; it applies from the next token on."""
        new = self.mask_change()
        if new is None:
            return
        new = normalize_head_mask(new)
        index = len(self.generated)
        ending = (self.job.stopped or index >= self.max_new
                  or (index and self.generated[-1] == self.info.eos_token_id))
        if ending or new == self.head_mask.mask:
            return  # no token will be produced under it, or nothing changes
        self.head_mask.set(new)
        self.emit(HeadMaskChanged(index=index, head_mask=mask_triples(new)))

    def finish(self, reason: str | None = None, message: str = "") -> Finished:
        """The run's summary; `reason` "cancelled" or "error" when it did not end by itself."""
        self.text_parts.append(self.decoder.flush())
        text = "".join(self.text_parts)
        n = len(self.generated)
        if reason is None:
            if n and self.generated[-1] == self.info.eos_token_id:
                reason = "eos"
            elif n and any(s in text[-(len(s) + 64):] for s in self.request.settings.stop_strings):
                reason = "stop_string"
            else:
                reason = "length"
        elapsed = time.perf_counter() - self.t0
        ttft = None if self.t_first is None else self.t_first - self.t0
        rate = (n - 1) / (self.t_last - self.t_first) if n > 1 and self.t_last > self.t_first else None
        return Finished(reason=reason, text=text, token_ids=tuple(self.generated), n_tokens=n, elapsed_s=elapsed,
                        time_to_first_token_s=ttft, tokens_per_s=rate,
                        memory_bytes=memory_in_use(self.loaded.device), message=message)


def run_generation(loaded: LoadedModel, request: GenerationRequest, job: JobContext,
                   between_steps: Callable[[], None] = lambda: None,
                   mask_change: MaskSource = lambda: None) -> Finished:
    """Generate on the calling thread (the engine's worker), emitting events to `job`; returns the
    summary. A stop of `job` ends the run before its next step, or its next decoder layer, as "cancelled".

    `between_steps` is called after each token, before the next forward step (small side jobs).
    `mask_change` is polled there too: it returns (and forgets) a head mask set during the run, or
    None; a new mask applies from the next generated token and is reported as HeadMaskChanged.

    Once Started has been emitted the run always ends with a Finished event, "error" (with the
    message) included, so what it produced up to the failure is kept and labelled as such."""
    run = _Run(loaded, request, job, between_steps, mask_change)
    try:
        finished = run.run()
    except BaseException as exc:
        if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
            error = EngineError("Out of memory while generating: lower max new tokens, shorten the prompt, "
                                "or turn off keeping full attention rows.")
        else:
            error = exc
        if run.started:
            job.emit(run.finish("error", describe_error(error, "Generation")[0]))
        if error is exc:
            raise
        raise error from None
    job.emit(finished)
    return finished
