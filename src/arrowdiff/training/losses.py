"""Training objectives as functions ``(model, batch, ...) -> (loss, stats)``.

``mdlm_loss``: the continuous-time NELBO of masked diffusion (Sahoo et al. 2024, MDLM, eq. 10):

    L = E_{t ~ U[eps, 1]} [ w(t) * sum_{i masked in x_t} -log p_theta(x0_i | x_t) ],  w(t) = m'(t)/m(t)

with SUBS parameterisation and low-discrepancy (antithetic-stratified) sampling of t across the batch.
Normalised per token it upper-bounds the data's negative log-likelihood in nats per token, so
exp(L) bounds perplexity. ``ar_loss``: next-token cross-entropy of the same network run causally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arrowdiff.errors import ModalityError
from arrowdiff.network.model import UnifiedModel
from arrowdiff.schedules.masking import MaskSchedule, mask_tokens, nelbo_weight
from arrowdiff.training.speech_data import SpeechBatch


def low_discrepancy_times(
    batch: int, eps: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """t_i = eps + (1-eps) * ((u + i/B) mod 1): one uniform draw stratified over the batch (MDLM)."""
    u = torch.rand((), generator=generator)
    t = (u + torch.arange(batch) / batch) % 1.0
    return (eps + (1 - eps) * t).to(device)


def masked_nll(logits: Tensor, x0: Tensor, mask_id: int) -> Tensor:
    """-log p(x0) per position under the SUBS-normalised logits (mask token excluded): (B, T)."""
    logits = logits.float()
    logits[..., mask_id] = float("-inf")
    return F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")


def mdlm_loss(
    model: UnifiedModel,
    x0: Tensor,
    modalities: Sequence[str] | str,
    schedule: MaskSchedule,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    mask_id: int | None = None,
    memory: Tensor | None = None,
    memory_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """NELBO in nats per token for a batch of clean tokens x0 (B, T).

    ``mask_id`` defaults to ``model.cfg.text.mask_id``; pass it when ``model`` is a wrapper (DDP) that
    does not expose ``cfg``. ``memory`` (B, K, 384) + ``memory_mask`` condition each row on memories."""
    B, T = x0.shape
    mask_id = model.cfg.text.mask_id if mask_id is None else mask_id
    t = low_discrepancy_times(B, eps, generator, x0.device) if t is None else t
    x_t, is_masked = mask_tokens(x0, t, schedule, mask_id, generator)
    if memory is None:
        logits = model(x_t, t, modalities)
    else:
        logits = model(x_t, t, modalities, memory=memory, memory_mask=memory_mask)
    nll = masked_nll(logits, x0, mask_id)  # (B, T)
    w = nelbo_weight(schedule, t).to(nll.dtype)  # (B,)
    per_seq = (nll * is_masked).sum(-1)  # (B,)
    loss = (w * per_seq).sum() / (B * T)
    with torch.no_grad():
        n_masked = is_masked.sum().clamp_min(1)
        stats = {"nelbo": loss.item(), "masked_ce": ((nll * is_masked).sum() / n_masked).item()}
    return loss, stats


def ar_loss(
    model: UnifiedModel, x0: Tensor, modalities: Sequence[str] | str
) -> tuple[Tensor, dict[str, float]]:
    """Next-token cross-entropy in nats per predicted token; the model must have objective='ar'."""
    B, T = x0.shape
    t = torch.zeros(B, device=x0.device)  # the AR network sees clean data: time is always 0
    logits = model(x0[:, :-1], t, modalities)
    loss = F.cross_entropy(logits.float().transpose(1, 2), x0[:, 1:])
    return loss, {"ce": loss.item()}


def logit_normal_times(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """t = sigmoid(n), n ~ N(0, 1): the logit-normal time density of SD3 (Esser et al. 2024), which
    spends training on the middle of the path where the velocity is hardest to predict."""
    return torch.sigmoid(torch.randn(batch, generator=generator)).clamp(1e-4, 1 - 1e-4).to(device)


def flow_pair(
    x0: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The flow-matching training pair for data x0 (B, ...): times t (B,) (logit-normal unless given),
    x_t = (1 - t) x0 + t eps and the velocity target eps - x0."""
    t = logit_normal_times(x0.shape[0], generator, x0.device) if t is None else t
    eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    tt = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return t, (1 - tt) * x0 + tt * eps, eps - x0


def flow_loss(
    model: UnifiedModel,
    x0: Tensor,
    modality: str = "image",
    generator: torch.Generator | None = None,
    caption: Tensor | None = None,
    caption_mask: Tensor | None = None,
    t: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Conditional flow matching (Lipman et al. 2023) on latents x0 (B, C, h, w): mean squared error of
    the predicted velocity against eps - x0 at x_t = (1 - t) x0 + t eps."""
    t, x_t, target = flow_pair(x0, generator, t)
    v = model(x_t, t, modality, caption=caption, caption_mask=caption_mask)  # a latent: the image path
    loss = F.mse_loss(v.float(), target.float())
    return loss, {"flow_mse": loss.item()}


def speech_loss(
    model: UnifiedModel,
    batch: SpeechBatch,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    duration_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Text-to-speech on the shared backbone: flow matching (as :func:`flow_loss`) on the normalised
    log-mel of a window, given its frame-aligned phones and the speaker embedding of a *different*
    utterance of the same voice (dropped for ``~keep_speaker`` rows), plus the duration predictor's MSE
    on log(1 + frames) per phone (FastSpeech 2). The reference encoder learns through both."""
    head, voice = model.head("audio"), model.voice
    if voice is None:
        raise ModalityError("this model has no voice model: it was built without the audio modality")
    x0 = head.normalize(batch.mel)
    speaker = voice.embed_reference(head.normalize(batch.reference))  # (B, E)
    t, x_t, target = flow_pair(x0, generator, t)
    v = model(
        x_t, t, "audio", phones=batch.phones, speaker=speaker[:, None, :], speaker_mask=batch.keep_speaker
    )
    mse = F.mse_loss(v.float(), target.float())
    pmask = batch.utt_phones != 0
    log_d = voice.durations(batch.utt_phones, speaker).float()
    target = torch.log1p(batch.utt_durations.float())
    dur = ((log_d - target) ** 2 * pmask).sum() / pmask.sum().clamp_min(1)
    return mse + duration_weight * dur, {"speech_flow_mse": mse.item(), "duration_mse": dur.item()}
