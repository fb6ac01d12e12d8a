"""K same-shape MLPs as stacked tensors, and vectorised optimizer steps with per-member settings.

The training loop is model.train's (``PackTrainer`` over a ``StackedEngine``); this module holds
what a pack has that a single run does not. Example: ``python -m model train --lr 0.1 0.03 0.01``
trains three members at once.

Layer ``l`` of member ``k`` is ``weights[l][k]`` of shape ``(fan_in, fan_out)`` (the transpose of
``nn.Linear.weight``) and ``biases[l][k]`` of shape ``(1, fan_out)``, so one ``baddbmm`` computes
every member's layer at once. Each optimizer step is a handful of element-wise tensor ops over the
whole stack, written after torch.optim's single-tensor implementations (the reference they are
tested against), with each hyperparameter a tensor of shape ``(K,)`` broadcast over a member's
weights. Per-member scalars are computed in float64, as torch.optim computes its Python floats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.nn import functional as F

from model.mlp import MLP, MLPConfig
from model.optim import OPTIMIZERS, resolve_optimizer

# The hidden activations of model.mlp.ACTIVATIONS as functions (same defaults: leaky slope 0.01,
# exact gelu).
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
}


class StackedMLP:
    """K MLPs of one MLPConfig, each layer one (K, fan_in, fan_out) leaf tensor."""

    def __init__(self, cfg: MLPConfig, members: Sequence[MLP], device: torch.device) -> None:
        self.cfg = cfg
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor | None] = []
        for layers in zip(*(m.linears for m in members), strict=True):
            weight = torch.stack([layer.weight.detach().t() for layer in layers])
            self.weights.append(weight.to(device).contiguous().requires_grad_())
            if cfg.bias:
                bias = torch.stack([layer.bias.detach().unsqueeze(0) for layer in layers])
                self.biases.append(bias.to(device).contiguous().requires_grad_())
            else:
                self.biases.append(None)
        self._acts = [_ACTIVATIONS[name] for name in cfg.activations]

    def parameters(self) -> list[torch.Tensor]:
        """Every stacked tensor in nn.Linear's order (weight then bias, layer by layer)."""
        pairs = zip(self.weights, self.biases, strict=True)
        return [t for pair in pairs for t in pair if t is not None]

    def set_parameters(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace the leaves (same order as parameters()); used to drop members or restore."""
        it = iter(tensors)
        for layer in range(len(self.weights)):
            self.weights[layer] = next(it).detach().contiguous().requires_grad_()
            if self.biases[layer] is not None:
                self.biases[layer] = next(it).detach().contiguous().requires_grad_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in) -> (K, B, out); a shared (B, in) input is broadcast to every member."""
        h = x
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if h.dim() == 2:  # the shared input of evaluation
                h = torch.matmul(h, weight) if bias is None else torch.matmul(h, weight) + bias
            elif bias is None:
                h = torch.bmm(h, weight)
            else:
                h = torch.baddbmm(bias, h, weight)
            if layer < last:
                h = self._acts[layer](h)
        if self.cfg.output_activation == "sigmoid":
            h = torch.sigmoid(h)
        elif self.cfg.output_activation == "softmax":
            h = torch.softmax(h, dim=-1)
        return h


def _per_member(values: Sequence[float | bool], device: torch.device) -> torch.Tensor:
    dtype = torch.bool if isinstance(values[0], bool) else torch.float64
    return torch.tensor(list(values), dtype=dtype, device=device)


def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) in like's dtype, to scale each member's slice of like."""
    shape = (len(values),) + (1,) * (like.dim() - 1)
    return (values if values.dtype == torch.bool else values.to(like.dtype)).view(shape)


def _choose(mask: torch.Tensor, if_true, if_false, like: torch.Tensor) -> torch.Tensor:
    """Per member: if_true() where mask, else if_false() (each called only when needed)."""
    if bool(mask.all()):
        return if_true()
    if not bool(mask.any()):
        return if_false()
    return torch.where(_view(mask, like), if_true(), if_false())


class StackedOptimizer:
    """One optimizer of model.optim's table over stacked parameters, hyperparameters per member.

    ``step(params)`` reads ``p.grad`` and updates each ``p`` in place; ``keep(rows)`` drops the
    other members from every state tensor and hyperparameter.
    """

    def __init__(
        self,
        name: str,
        params: Sequence[torch.Tensor],
        lrs: Sequence[float],
        hyperparams: Sequence[Mapping[str, float | bool]],
    ) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}")
        self.name = name
        device = params[0].device
        resolved = [resolve_optimizer(name, hp) for hp in hyperparams]
        self.hp: dict[str, torch.Tensor] = {"lr": _per_member(lrs, device)}
        for key in OPTIMIZERS[name].hyperparams:
            self.hp[key] = _per_member([r[key] for r in resolved], device)
        self.step_count = 0
        self.state: dict[str, list[torch.Tensor]] = self._initial_state(params)

    def _initial_state(self, params: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        if self.name == "sgd":
            return {"momentum_buffer": zeros}
        if self.name in ("adam", "adamw"):
            return {
                "exp_avg": zeros,
                "exp_avg_sq": [torch.zeros_like(p) for p in params],
                "max_exp_avg_sq": [torch.zeros_like(p) for p in params],
            }
        if self.name == "rmsprop":
            return {
                "square_avg": zeros,
                "momentum_buffer": [torch.zeros_like(p) for p in params],
                "grad_avg": [torch.zeros_like(p) for p in params],
            }
        init = self.hp["initial_accumulator_value"]
        return {"sum": [torch.ones_like(p) * _view(init, p) for p in params]}

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor]) -> None:
        """One update of every member from the gradients in p.grad."""
        self.step_count += 1
        update = getattr(self, f"_{self.name}")
        for i, p in enumerate(params):
            update(i, p, p.grad)

    def _decayed(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        weight_decay = self.hp["weight_decay"]
        if not bool(weight_decay.any()):
            return grad
        return grad.add(p * _view(weight_decay, p))

    def _sgd(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        hp = self.hp
        grad = self._decayed(p, grad)
        momentum = hp["momentum"]
        if bool(momentum.any()):
            buf = self.state["momentum_buffer"][i]
            if self.step_count == 1:
                buf.copy_(grad)  # torch.optim starts the buffer at the first gradient
            else:
                buf.mul_(_view(momentum, p)).add_(grad * _view(1 - hp["dampening"], p))
            momentum_grad = _choose(
                hp["nesterov"], lambda: grad + buf * _view(momentum, p), lambda: buf, p
            )
            grad = _choose(momentum > 0, lambda: momentum_grad, lambda: grad, p)
        p.sub_(grad * _view(hp["lr"], p))

    def _adam(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        self._adam_like(i, p, grad, decoupled=False)

    def _adamw(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        self._adam_like(i, p, grad, decoupled=True)

    def _adam_like(self, i: int, p: torch.Tensor, grad: torch.Tensor, *, decoupled: bool) -> None:
        hp, step = self.hp, self.step_count
        if decoupled:
            p.mul_(_view(1 - hp["lr"] * hp["weight_decay"], p))
        else:
            grad = self._decayed(p, grad)
        exp_avg, exp_avg_sq = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        beta1, beta2 = hp["beta1"], hp["beta2"]
        exp_avg.lerp_(grad, _view(1 - beta1, p))
        exp_avg_sq.mul_(_view(beta2, p)).addcmul_(grad * _view(1 - beta2, p), grad)
        step_size = hp["lr"] / (1 - beta1**step)
        bias_correction2_sqrt = torch.sqrt(1 - beta2**step)

        def amsgrad() -> torch.Tensor:
            max_sq = self.state["max_exp_avg_sq"][i]
            torch.maximum(max_sq, exp_avg_sq, out=max_sq)
            return max_sq

        second = _choose(hp["amsgrad"], amsgrad, lambda: exp_avg_sq, p)
        denom = (second.sqrt() / _view(bias_correction2_sqrt, p)).add_(_view(hp["eps"], p))
        p.sub_(exp_avg / denom * _view(step_size, p))

    def _rmsprop(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        hp = self.hp
        grad = self._decayed(p, grad)
        alpha = hp["alpha"]
        square_avg = self.state["square_avg"][i]
        square_avg.mul_(_view(alpha, p)).addcmul_(grad * _view(1 - alpha, p), grad)

        def centered() -> torch.Tensor:
            grad_avg = self.state["grad_avg"][i]
            grad_avg.lerp_(grad, _view(1 - alpha, p))
            return square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()

        avg = _choose(hp["centered"], centered, lambda: square_avg.sqrt(), p)
        avg = avg.add_(_view(hp["eps"], p))
        momentum = hp["momentum"]
        if bool(momentum.any()):
            buf = self.state["momentum_buffer"][i]
            buf.mul_(_view(momentum, p)).addcdiv_(grad, avg)
            direction = _choose(momentum > 0, lambda: buf, lambda: grad / avg, p)
        else:
            direction = grad / avg
        p.sub_(direction * _view(hp["lr"], p))

    def _adagrad(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        hp = self.hp
        grad = self._decayed(p, grad)
        clr = hp["lr"] / (1 + (self.step_count - 1) * hp["lr_decay"])
        state_sum = self.state["sum"][i]
        state_sum.addcmul_(grad, grad)
        std = state_sum.sqrt().add_(_view(hp["eps"], p))
        p.sub_(grad / std * _view(clr, p))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at rows (a LongTensor of positions in the stack)."""
        self.hp = {key: value[rows.to(value.device)] for key, value in self.hp.items()}
        self.state = {
            key: [t.index_select(0, rows.to(t.device)) for t in tensors]
            for key, tensors in self.state.items()
        }

    def state_dict(self) -> dict:
        return {"step": self.step_count, "hp": dict(self.hp), "state": self.state}

    def load_state_dict(self, state: Mapping) -> None:
        self.step_count = int(state["step"])
        self.hp = {key: value.clone() for key, value in state["hp"].items()}
        self.state = {key: [t.clone() for t in ts] for key, ts in state["state"].items()}


def stacked_loss(cfg: MLPConfig, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member sum of the loss over rows: out (K, B, O), targets (K, B[, O]) or shared (B[, O])
    -> (K,). Divide by B (cross_entropy) or B * O (mse) for the batch mean."""
    k, rows = out.shape[0], out.shape[1]
    if cfg.loss == "cross_entropy":
        if targets.dim() == 1:
            targets = targets.expand(k, rows)
        flat = F.cross_entropy(out.reshape(k * rows, -1), targets.reshape(-1), reduction="none")
        return flat.view(k, rows).sum(dim=1)
    if targets.dim() == 2:
        targets = targets.expand(k, *targets.shape)
    return F.mse_loss(out, targets, reduction="none").sum(dim=(1, 2))


def loss_count(cfg: MLPConfig, rows: int) -> int:
    """How many terms the batch-mean loss averages over for rows rows."""
    return rows if cfg.loss == "cross_entropy" else rows * cfg.output_size


__all__ = ["StackedMLP", "StackedOptimizer", "loss_count", "stacked_loss"]
