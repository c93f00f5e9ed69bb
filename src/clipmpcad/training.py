"""The fit loop: support views, two Adam optimisers (seg, det), epochs (METHOD §8).

Speed without changing results: the blocks before the first level run once per support view
per run (no adapter acts there); the backbone needs no weight gradients; micro-batches split an
optimiser step into several forward passes whose gradients add up to the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .augment import NUM_VIEWS, expand_views
from .config import TrainConfig
from .decoder import anomaly_probability, detection_scores, patch_logits
from .errors import ConfigError
from .losses import detection_loss, dice_loss, focal_loss
from .model import ClipMPCAD
from .runtime import autocast


@dataclass
class SupportSet:
    """Support views: images (V,3,S,S), masks (V,1,S,S), labels (V,), groups (V,) owner image id,
    seg (V,) bool: the view's mask is ground truth (its dataset has masks), so the seg losses apply."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    seg: torch.Tensor
    prototypes: torch.Tensor | None = None  # (V, D, 2): each view's own text prototypes; None: the model's

    def __len__(self) -> int:
        return int(self.labels.numel())

    @classmethod
    def of_images(
        cls, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, views: int = NUM_VIEWS, seg: bool = True
    ) -> SupportSet:
        """Every view of images (n,3,S,S) with masks (n,1,S,S) and labels (n,): n·views support
        views, each owned by its image; seg: the masks are ground truth."""
        view_images, view_masks = expand_views(images, masks, views)
        per_view = lambda t: t.repeat_interleave(views)  # noqa: E731  (n,) → (n·views,)
        n = len(labels)
        return cls(view_images, view_masks, per_view(labels), per_view(torch.arange(n)), torch.full((n * views,), seg))

    def select(self, label: int) -> SupportSet:
        keep = self.labels == label
        protos = None if self.prototypes is None else self.prototypes[keep]
        return SupportSet(
            self.images[keep], self.masks[keep], self.labels[keep], self.groups[keep], self.seg[keep], protos
        )

    @staticmethod
    def concat(sets: list[SupportSet]) -> SupportSet:
        """Several support sets as one; owner ids stay distinct."""
        offsets = torch.cumsum(torch.tensor([0] + [int(s.groups.max()) + 1 for s in sets[:-1]]), 0)
        return SupportSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.masks for s in sets]),
            torch.cat([s.labels for s in sets]),
            torch.cat([s.groups + o for s, o in zip(sets, offsets, strict=True)]),
            torch.cat([s.seg for s in sets]),
            None if any(s.prototypes is None for s in sets) else torch.cat([s.prototypes for s in sets]),
        )


@dataclass
class TrainHistory:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    steps: int = 0


def objective(
    model: ClipMPCAD,
    prefix: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    seg: torch.Tensor,
    prototypes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss (B,): sum over levels of focal + dice (where `seg`) and BCE on the detection score.

    prototypes (B, D, 2): each sample's own text prototypes (training on several categories).
    """
    feats = model.features(prefix=prefix)
    size = masks.shape[-1]
    mask = masks[:, 0]  # (B, S, S)
    protos = model.prototypes if prototypes is None else prototypes
    det_logits = torch.stack([patch_logits(f, protos, model.grid) for f in feats.det], dim=1)
    det = detection_scores(det_logits)  # (B, L)
    loss = det.new_zeros(det.shape[0], dtype=torch.float32)
    probs = None
    if bool(seg.any()):
        seg_logits = torch.stack([patch_logits(f, protos, model.grid) for f in feats.seg], dim=1)
        probs = anomaly_probability(seg_logits, size)  # (B, L, S, S)
    weight = seg.float()
    for level in range(det.shape[1]):
        if probs is not None:
            loss = loss + weight * (focal_loss(probs[:, level], mask) + dice_loss(probs[:, level], mask))
        loss = loss + detection_loss(det[:, level], labels)
    if model.decoder.seg_logits.requires_grad:  # learned level weights see the combined outputs
        n = det.shape[1]
        if probs is not None:
            combined = model.decoder.combine(probs, "seg") / n
            loss = loss + weight * (focal_loss(combined, mask) + dice_loss(combined, mask))
        loss = loss + detection_loss(model.decoder.combine(det, "det") / n, labels)
    return loss


CPU_ACTIVATION_BUDGET = 1.5 * 2**30  # bytes of saved activations per forward pass on a CPU
ACTIVATION_FLOATS_PER_TOKEN = 32  # × width, per block trained through: measured on ViT-L-14 (≈0.6 GiB a view)


def default_micro_batch(batch_size: int, model: ClipMPCAD, device: torch.device) -> int:
    """Views per forward pass when the config leaves it open (results are the same either way):
    the whole step on a GPU; on a CPU as many as keep the saved activations within budget, which
    is 2 for ViT-L-14 at 240 px and the whole step for small models."""
    if device.type == "cuda":
        return batch_size
    info = model.backbone.info
    blocks = info.levels[-1] - info.levels[0]  # the blocks that backward runs through
    per_view = ACTIVATION_FLOATS_PER_TOKEN * 4 * max(blocks, 1) * (1 + info.num_patches) * info.width
    return int(max(1, min(batch_size, CPU_ACTIVATION_BUDGET // per_view)))


@torch.no_grad()
def compute_prefixes(
    model: ClipMPCAD, images: torch.Tensor, device: torch.device, batch: int, precision: str = "auto"
) -> torch.Tensor:
    """Tokens after the first level for every view, once per run: (V,3,S,S) → (V,1+N,C) on device."""
    chunks = []
    for start in range(0, images.shape[0], batch):
        with autocast(device, precision):
            chunks.append(model.prefix(images[start : start + batch].to(device)).float())
    return torch.cat(chunks)


def fit(
    model: ClipMPCAD,
    support: SupportSet,
    cfg: TrainConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
    precision: str = "auto",
    on_epoch: Callable[[int], None] | None = None,
    progress: bool = True,
) -> TrainHistory:
    """Train the adapters (and learned level weights) on the support views; returns the loss history.

    cfg.lr must be set: the caller resolves the domain's default (METHOD §8). precision: the
    autocast of the backbone and adapters (runtime.compute_dtype); the adapters' weights, their
    gradients and the optimiser state stay fp32."""
    if cfg.lr is None:
        raise ValueError("fit needs a learning rate: resolve TrainConfig.lr's domain default first")
    history = TrainHistory()
    if cfg.epochs == 0 or not model.adapted:
        return history
    micro = cfg.micro_batch or default_micro_batch(cfg.batch_size, model, device)
    prefixes = compute_prefixes(model, support.images, device, micro, precision)
    masks, labels, seg = support.masks.to(device), support.labels.float().to(device), support.seg.to(device)
    protos = None if support.prototypes is None else support.prototypes.to(device)
    optimisers = [
        torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, fused=True)  # one kernel per step, CPU and GPU
        for params in (model.branch_parameters("seg"), model.branch_parameters("det"))
        if params
    ]
    n = len(support)
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per forward pass
        for start in range(0, n, cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            for opt in optimisers:
                opt.zero_grad(set_to_none=True)
            for m in range(0, batch.numel(), micro):
                idx = batch[m : m + micro]
                with autocast(device, precision):
                    losses = objective(
                        model, prefixes[idx], masks[idx], labels[idx], seg[idx], None if protos is None else protos[idx]
                    )  # (b,)
                (losses.sum() / batch.numel()).backward()  # gradients of the step's mean loss
                total += losses.detach().sum()
            for opt in optimisers:
                opt.step()
            history.steps += 1
        history.losses.append(float(total) / n)
        if not math.isfinite(history.losses[-1]):  # nothing after this is meaningful: stop, say why
            raise ConfigError(
                f"training diverged in epoch {epoch + 1} (mean loss {history.losses[-1]}); "
                f"lower the learning rate (--lr, train.lr = {cfg.lr:g})"
            )
        bar.set_postfix(loss=f"{history.losses[-1]:.4f}")
        if on_epoch is not None:
            on_epoch(epoch)
    return history
