"""PyTorch eager peers of the zoo models and of the benchmarked steps, for `jax_unlearn.bench`.

Each peer is the same architecture as its Flax model (same layers, shapes, activations dict),
trained with the same losses and Adam, so the benchmark compares the same work. Weights are
copied from the Flax variables (`load_variables`), which is what the benchmark's correctness
guard relies on: both sides must compute the same loss on the same batch before anything is
timed. Layout notes: Flax convolutions are NHWC with HWIO kernels, PyTorch NCHW with OIHW; the
peers take NHWC input (as the data contract) and permute once, and run convnets in
channels_last memory format, PyTorch's recommended layout for CPU (oneDNN) and GPU (cuDNN).
"""
import time
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_EPS = 1e-12  # as jax_unlearn.unlearn.blindspot


def _tensor(a, device=None) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32)).to(device)


def _bn(features: int) -> nn.BatchNorm2d:
  # Flax BatchNorm(momentum=0.9, epsilon=1e-5) == torch momentum 0.1.
  return nn.BatchNorm2d(features, eps=1e-5, momentum=0.1)


def _load_conv(conv: nn.Conv2d, p: Mapping) -> None:
  conv.weight.data.copy_(_tensor(p["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW


def _load_bn(bn: nn.BatchNorm2d, p: Mapping, s: Mapping) -> None:
  bn.weight.data.copy_(_tensor(p["scale"]))
  bn.bias.data.copy_(_tensor(p["bias"]))
  bn.running_mean.copy_(_tensor(s["mean"]))
  bn.running_var.copy_(_tensor(s["var"]))


def _load_dense(dense: nn.Linear, p: Mapping) -> None:
  dense.weight.data.copy_(_tensor(p["kernel"]).T)
  dense.bias.data.copy_(_tensor(p["bias"]))


class AllCNN(nn.Module):
  """jax_unlearn.models.AllCNN: 8 x (conv, BN, ReLU), global average pool, linear head."""

  def __init__(self, in_features: int = 3, width: float = 1.0, out_dim: int = 1):
    super().__init__()
    f1, f2 = max(1, int(96 * width)), max(1, int(192 * width))
    plan = [(f1, 3, 1), (f1, 3, 1), (f2, 3, 2), (f2, 3, 1), (f2, 3, 1), (f2, 3, 2), (f2, 3, 1),
            (f2, 1, 1)]
    self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
    c = in_features
    for features, kernel, stride in plan:
      self.convs.append(nn.Conv2d(c, features, kernel, stride, (kernel - 1) // 2, bias=False))
      self.norms.append(_bn(features))
      c = features
    self.head = nn.Linear(c, out_dim)

  def forward(self, x):  # x [B, H, W, C]
    x = x.permute(0, 3, 1, 2)
    acts = {}
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms), start=1):
      x = acts[f"block{i}"] = F.relu(norm(conv(x)))
    x = acts["features"] = x.mean(dim=(2, 3))
    return self.head(x), acts

  def load_variables(self, variables: Mapping) -> None:
    p, s = variables["params"], variables["batch_stats"]
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      _load_conv(conv, p[f"ConvBlock_{i}"]["Conv_0"])
      _load_bn(norm, p[f"ConvBlock_{i}"]["BatchNorm_0"], s[f"ConvBlock_{i}"]["BatchNorm_0"])
    _load_dense(self.head, p["Dense_0"])


class BasicBlock(nn.Module):
  """jax_unlearn.models.resnet.BasicBlock (1x1 projection shortcut when the shape changes)."""

  def __init__(self, cin: int, features: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, features, 3, stride, 1, bias=False)
    self.bn1 = _bn(features)
    self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    self.bn2 = _bn(features)
    self.proj = None
    if stride != 1 or cin != features:
      self.proj = nn.Conv2d(cin, features, 1, stride, 0, bias=False)
      self.bn3 = _bn(features)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.proj is not None:
      x = self.bn3(self.proj(x))
    return F.relu(x + y)

  def load(self, p: Mapping, s: Mapping) -> None:
    _load_conv(self.conv1, p["Conv_0"])
    _load_bn(self.bn1, p["BatchNorm_0"], s["BatchNorm_0"])
    _load_conv(self.conv2, p["Conv_1"])
    _load_bn(self.bn2, p["BatchNorm_1"], s["BatchNorm_1"])
    if self.proj is not None:
      _load_conv(self.proj, p["Conv_2"])
      _load_bn(self.bn3, p["BatchNorm_2"], s["BatchNorm_2"])


class ResNet18(nn.Module):
  """jax_unlearn.models.ResNet18 (CIFAR stem: 3x3 conv, no max-pool)."""

  def __init__(self, in_features: int = 3, width: float = 1.0, out_dim: int = 1):
    super().__init__()
    stem = max(1, int(64 * width))
    self.stem = nn.Conv2d(in_features, stem, 3, 1, 1, bias=False)
    self.stem_bn = _bn(stem)
    self.blocks = nn.ModuleList()
    c = stem
    for i in range(8):
      stage = i // 2
      features = max(1, int(64 * 2**stage * width))
      self.blocks.append(BasicBlock(c, features, 2 if stage > 0 and i % 2 == 0 else 1))
      c = features
    self.head = nn.Linear(c, out_dim)

  def forward(self, x):  # x [B, H, W, C]
    x = x.permute(0, 3, 1, 2)
    x = acts_stem = F.relu(self.stem_bn(self.stem(x)))
    acts = {"stem": acts_stem}
    for i, block in enumerate(self.blocks, start=1):
      x = acts[f"block{i}"] = block(x)
    x = acts["features"] = x.mean(dim=(2, 3))
    return self.head(x), acts

  def load_variables(self, variables: Mapping) -> None:
    p, s = variables["params"], variables["batch_stats"]
    _load_conv(self.stem, p["Conv_0"])
    _load_bn(self.stem_bn, p["BatchNorm_0"], s["BatchNorm_0"])
    for i, block in enumerate(self.blocks):
      block.load(p[f"BasicBlock_{i}"], s[f"BasicBlock_{i}"])
    _load_dense(self.head, p["Dense_0"])


class LSTMPairRegressor(nn.Module):
  """jax_unlearn.models.LSTMPairRegressor: a shared LSTM over both sentences, then a ReLU MLP."""

  def __init__(self, in_features: int = 50, hidden: int = 64, dense=(64, 32, 16),
               out_dim: int = 1):
    super().__init__()
    self.hidden = hidden
    self.lstm = nn.LSTM(in_features, hidden, batch_first=True)
    sizes = [2 * hidden, *dense]
    self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
    self.head = nn.Linear(sizes[-1], out_dim)

  def forward(self, x):  # x [B, 2, T, E]
    b, _, t, e = x.shape
    _, (h, _) = self.lstm(x.reshape(b * 2, t, e))  # h [1, 2B, hidden]
    h = h[0].reshape(b, 2, self.hidden)
    acts = {"sentence_a": h[:, 0], "sentence_b": h[:, 1]}
    x = h.reshape(b, 2 * self.hidden)
    for i, dense in enumerate(self.dense, start=1):
      x = acts[f"dense{i}"] = F.relu(dense(x))
    return self.head(x), acts

  def load_variables(self, variables: Mapping) -> None:
    p = variables["params"]
    cell = next(v for k, v in p.items() if "LSTMCell" in k)
    # Flax gates i, f, g, o: input kernels without bias, hidden kernels with bias.
    w_ih = np.concatenate([np.asarray(cell[f"i{g}"]["kernel"]) for g in "ifgo"], axis=1).T
    w_hh = np.concatenate([np.asarray(cell[f"h{g}"]["kernel"]) for g in "ifgo"], axis=1).T
    b_hh = np.concatenate([np.asarray(cell[f"h{g}"]["bias"]) for g in "ifgo"])
    self.lstm.weight_ih_l0.data.copy_(_tensor(w_ih))
    self.lstm.weight_hh_l0.data.copy_(_tensor(w_hh))
    self.lstm.bias_hh_l0.data.copy_(_tensor(b_hh))
    self.lstm.bias_ih_l0.data.zero_()
    for i, dense in enumerate(self.dense):
      _load_dense(dense, p[f"Dense_{i}"])
    _load_dense(self.head, p[f"Dense_{len(self.dense)}"])


PEERS: dict[str, Callable[..., nn.Module]] = {
    "allcnn": AllCNN,
    "resnet18": ResNet18,
    "lstm": LSTMPairRegressor,
}


def make_peer(name: str, variables: Mapping, device: str = "cpu", **kwargs) -> nn.Module:
  """The PyTorch twin of zoo model `name` holding a copy of the Flax `variables`.

  `kwargs` are the Flax model's settings (e.g. width) plus `in_features`, the size of the
  input's last axis (image channels, word-vector size).
  """
  model = PEERS[name](**kwargs)
  model.load_variables(variables)
  model = model.to(device)
  if name in ("allcnn", "resnet18"):
    model = model.to(memory_format=torch.channels_last)
  return model


# --- losses: the same per-example values and masked means as jax_unlearn.losses ---------------

def l1(pred, y):
  """Per-example mean absolute error: [B]."""
  return (pred - y).abs().reshape(len(pred), -1).mean(dim=1)


def masked_mean(values, mask):
  return (values * mask).sum() / mask.sum().clamp(min=1.0)


def attention_map(act):
  """jax_unlearn.unlearn.blindspot.attention_map(mode="features") for NCHW or [B, F] input."""
  sq = act.float().square()
  maps = sq.mean(dim=1).reshape(len(act), -1) if act.dim() == 4 else sq.reshape(len(act), -1)
  norm = maps.square().sum(dim=1, keepdim=True).clamp(min=_EPS * _EPS).sqrt()
  return maps / norm


def blindspot_loss(pred, acts, bs_pred, bs_acts, batch, beta: float = 50.0):
  """c * L_forget + (1 - c) * L_retain, as jax_unlearn.unlearn.blindspot.make_blindspot_loss."""
  mask = batch["mask"]
  forget = mask * batch["forget"]
  retain = mask - forget
  att = sum(masked_mean((attention_map(acts[n]) - attention_map(bs_acts[n])).square().mean(dim=1),
                        forget) for n in acts)
  retain_loss = masked_mean(l1(pred, batch["y"]), retain)
  forget_loss = masked_mean(l1(pred, bs_pred), forget) + beta * att
  c = forget.sum() / mask.sum().clamp(min=1.0)
  return c * forget_loss + (1.0 - c) * retain_loss


# --- the steps ----------------------------------------------------------------------------------

class Steps:
  """Eager training / unlearning / prediction steps of one peer model, like the JAX ones.

  Args:
    model: the peer (train mode is set per step).
    batch: dict of tensors "x", "y", "forget", "mask" on the peer's device.
    blindspot: a frozen peer (evaluation mode) for the blindspot step, or None.
    lr: Adam's learning rate (optax.adam defaults otherwise: betas 0.9/0.999, eps 1e-8).
    autocast: a torch dtype to run the forward passes in (bf16 mixed precision), or None.
  """

  def __init__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], *,
               blindspot: nn.Module | None = None, lr: float = 1e-3,
               autocast: torch.dtype | None = None):
    self.model, self.batch, self.blindspot = model, batch, blindspot
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    self.device_type = next(model.parameters()).device.type
    self.autocast = autocast
    if blindspot is not None:
      blindspot.eval().requires_grad_(False)

  def _ctx(self):
    return torch.autocast(self.device_type, dtype=self.autocast, enabled=self.autocast is not None)

  def train(self) -> torch.Tensor:
    """One supervised L1 step; returns the loss before the update."""
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    with self._ctx():
      pred, _ = self.model(self.batch["x"])
    loss = masked_mean(l1(pred.float(), self.batch["y"]), self.batch["mask"])
    loss.backward()
    self.opt.step()
    return loss.detach()

  def blindspot_step(self) -> torch.Tensor:
    """One blindspot unlearning step (frozen blindspot forward on the whole batch)."""
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    with self._ctx():
      pred, acts = self.model(self.batch["x"])
      with torch.no_grad():
        bs_pred, bs_acts = self.blindspot(self.batch["x"])
    loss = blindspot_loss(pred.float(), acts, bs_pred.float(), bs_acts, self.batch)
    loss.backward()
    self.opt.step()
    return loss.detach()

  def predict(self) -> torch.Tensor:
    self.model.eval()
    with torch.inference_mode(), self._ctx():
      return self.model(self.batch["x"])[0].float()


def synchronize(device: str) -> None:
  if device.startswith("cuda"):
    torch.cuda.synchronize()


def gemm_flops_per_s(n: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
  """Best fp32 matmul rate of this machine through PyTorch (oneDNN/MKL or cuBLAS)."""
  a = torch.randn(n, n, device=device)
  a @ a
  best = float("inf")
  for _ in range(repeats):
    synchronize(device)
    t0 = time.perf_counter()
    a @ a
    synchronize(device)
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n**3 / best
