"""K same-shape MLPs as stacked tensors, and vectorised optimizer steps with per-member settings.

The training loop is model.train's (``PackTrainer`` over a ``StackedEngine``); this module holds
what a pack has that a single run does not. ``python -m sweep run STUDY.yaml`` trains its packs
through it (``resources.models_per_trial``).

Layer ``l`` of member ``k`` is ``weights[l][k]`` of shape ``(fan_out, fan_in)`` (as
``nn.Linear.weight``) and ``biases[l][k]`` of shape ``(fan_out, 1)``, and activations run
feature-major, ``(K, features, batch)``, so one ``baddbmm`` computes every member's layer at once
and its output is ``(K, out, batch)``. Feature-major because it is the faster layout on a CPU:
measured on the default study's network, a step 12-30 % quicker than batch-major ``(K, batch,
features)``, mostly from the narrow output layer (its matmul and ``log_softmax`` over 10 classes
are several times faster with the batch as the contiguous dimension).

A training step's forward and backward passes are written out (``loss_and_grad``), not left to
autograd: each weight's gradient is one ``baddbmm`` written straight into ``flat_grad`` (nothing
to zero, nothing to accumulate), and the hidden activations' derivatives are the kernels autograd
runs for them. A whole step, one core: MNIST-shaped network (784-128-64-10, 3 members, Adam)
0.92 ms against 1.15 ms with autograd at batch 32, 2.63 against 2.85 ms at 128; the default
study's (64-128-64-10, 7 RMSprop members) 0.44 against 0.56 ms at batch 16.

Each optimizer step is a handful of element-wise tensor ops over the whole stack, written after
torch.optim's single-tensor implementations (the reference they are tested against), with each
hyperparameter a tensor of shape ``(K,)`` broadcast over a member's weights. Per-member scalars
are computed in float64, as torch.optim computes its Python floats. Adam and AdamW instead call
torch's fused kernel (the one ``torch.optim.Adam(fused=True)`` runs) once per group of members
with equal hyperparameters, each member's row a tensor of its own: one pass over the stack
instead of about ten. Plain RMSprop on a CPU calls the same kernel, as Adam with beta1 = 0, and
Adagrad on a CPU torch's fused Adagrad kernel.
"""

from __future__ import annotations

import math
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
_aten = torch.ops.aten
# Their derivatives: (gradient at the output, the input z, the output a) -> gradient at z, by the
# kernels autograd runs for them.
_DERIVATIVES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda g, z, a: _aten.threshold_backward(g, a, 0),
    "tanh": lambda g, z, a: _aten.tanh_backward(g, a),
    "sigmoid": lambda g, z, a: _aten.sigmoid_backward(g, a),
    "leaky_relu": lambda g, z, a: _aten.leaky_relu_backward(g, z, 0.01, False),
    "gelu": lambda g, z, a: _aten.gelu_backward(g, z),
}


class StackedMLP:
    """K MLPs of one MLPConfig in one (K, P) float tensor, ``flat``: member k's P parameters are
    row k, in the order of ``nn.Module.parameters()``, and each layer is a view into it
    (``weights[l]`` (K, fan_out, fan_in), ``biases[l]`` (K, fan_out, 1)), so a forward pass is
    one batched matmul per layer while an optimizer step is a few element-wise ops over ``flat``.
    ``loss_and_grad`` writes the gradients into ``flat_grad`` (views ``weight_grads[l]``,
    ``bias_grads[l]``).
    """

    def __init__(self, cfg: MLPConfig, members: Sequence[MLP], device: torch.device) -> None:
        self.cfg = cfg
        rows = []
        for member in members:
            parts = []
            for layer in member.linears:
                parts.append(layer.weight.detach().reshape(-1))
                if cfg.bias:
                    parts.append(layer.bias.detach())
            rows.append(torch.cat(parts))
        self._acts = [_ACTIVATIONS[name] for name in cfg.activations]
        self._derivatives = [_DERIVATIVES[name] for name in cfg.activations]
        self._bind(torch.stack(rows).to(device))

    def _bind(self, flat: torch.Tensor) -> None:
        """Make flat (K, P) the parameters: views per layer, gradients in flat_grad.

        torch's bmm computes a batch of one on another path than a batch of several, rounded
        differently for many shapes. So a lone member keeps a ghost, a second row that the passes
        compute and drop and no optimizer steps: its numbers do not change when its neighbours
        leave the stack. (The other half of that guarantee is in model/__init__.py.)"""
        flat = flat.detach()
        store = flat.contiguous() if len(flat) > 1 else torch.cat([flat, flat])
        store_grad = torch.zeros_like(store)
        k = len(flat)
        self.flat, self.flat_grad = store[:k], store_grad[:k]
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor | None] = []
        self.weight_grads: list[torch.Tensor] = []
        self.bias_grads: list[torch.Tensor | None] = []
        at = 0

        def views(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal at
            size = shape[1] * shape[2]
            parts = store[:, at : at + size].view(shape), store_grad[:, at : at + size].view(shape)
            at += size
            return parts

        sizes, width = self.cfg.layer_sizes, len(store)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            weight, weight_grad = views((width, fan_out, fan_in))
            self.weights.append(weight)
            self.weight_grads.append(weight_grad)
            bias, bias_grad = views((width, fan_out, 1)) if self.cfg.bias else (None, None)
            self.biases.append(bias)
            self.bias_grads.append(bias_grad)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at rows (a LongTensor of positions)."""
        self._bind(self.flat.index_select(0, rows))

    def load_flat(self, flat: torch.Tensor) -> None:
        """Replace every member's parameters with flat (K', P)."""
        self._bind(flat.to(self.flat.device).clone())

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in), or a shared (B, in), as the first layer's input: (width, in, B), ghost
        row included (see _bind); a view where it can be (the matmuls take it transposed)."""
        k, width = len(self.flat), len(self.weights[0])
        if x.dim() == 2:  # the shared input of evaluation
            x = x.expand(width, *x.shape)
        elif k < width:
            x = torch.cat([x, x])
        return x.transpose(1, 2)

    def _layer(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weights[layer], self.biases[layer]
        return torch.bmm(weight, h) if bias is None else torch.baddbmm(bias, weight, h)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in) -> (K, out, B), feature-major; a shared (B, in) input is broadcast to
        every member."""
        h = self._inputs(x)
        for layer, act in enumerate(self._acts):
            h = act(self._layer(layer, h))
        h = self._layer(len(self._acts), h)[: len(self.flat)]
        if self.cfg.output_activation == "sigmoid":
            h = torch.sigmoid(h)
        elif self.cfg.output_activation == "softmax":
            h = torch.softmax(h, dim=1)
        return h

    def loss_and_grad(self, x: torch.Tensor, targets: torch.Tensor, count: int) -> torch.Tensor:
        """One training step's passes for every member on its own batch: x (K, B, in), targets
        (K, B[, O]). Returns the batch losses (K,), each member's summed loss over count
        (loss_count), and writes their gradients into flat_grad, every element (nothing to zero
        first). Forward and backward by hand: one batched matmul per layer and gradient, each
        weight's gradient written where it lives."""
        k = len(self.flat)
        if k < len(self.weights[0]):  # the ghost's targets
            targets = torch.cat([targets, targets])
        inputs, pre_activations = [self._inputs(x)], []
        for layer, act in enumerate(self._acts):
            pre_activations.append(self._layer(layer, inputs[-1]))
            inputs.append(act(pre_activations[-1]))
        out = self._layer(len(self._acts), inputs[-1])
        losses, grad = self._loss_and_output_grad(out, targets, count)
        for layer in range(len(inputs) - 1, -1, -1):
            self.weight_grads[layer].baddbmm_(grad, inputs[layer].transpose(1, 2), beta=0)
            bias_grad = self.bias_grads[layer]
            if bias_grad is not None:
                bias_grad.copy_(grad.sum(dim=2, keepdim=True))
            if layer:
                grad = torch.bmm(self.weights[layer].transpose(1, 2), grad)
                grad = self._derivatives[layer - 1](grad, pre_activations[layer - 1], inputs[layer])
        return losses[:k]

    def _loss_and_output_grad(
        self, out: torch.Tensor, targets: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's output (width, O, B) -> (losses (width,), the gradient of each
        member's loss at that output), for the loss and output activation of the config."""
        cfg = self.cfg
        if cfg.loss == "cross_entropy":  # output activation none (spec.VALID_OUTPUTS)
            log_p = torch.log_softmax(out, dim=1)
            picked = targets.unsqueeze(1)
            losses = log_p.gather(1, picked).sum(dim=(1, 2)).neg_() / count
            minus_one = torch.full_like(picked, -1, dtype=out.dtype)
            grad = log_p.exp_().scatter_add_(1, picked, minus_one)  # softmax - one-hot
            return losses, grad.div_(count)
        y = out
        if cfg.output_activation == "sigmoid":
            y = torch.sigmoid(out)
        elif cfg.output_activation == "softmax":
            y = torch.softmax(out, dim=1)
        diff = y - targets.transpose(1, 2)
        losses = diff.square().sum(dim=(1, 2)) / count
        grad = diff.mul_(2 / count)
        if cfg.output_activation == "sigmoid":
            grad = _aten.sigmoid_backward(grad, y)
        elif cfg.output_activation == "softmax":
            grad = _aten._softmax_backward_data(grad, y, 1, y.dtype)
        return losses, grad


def columns_from_batch_major(cfg: MLPConfig) -> torch.Tensor:
    """Column order that turns a (K, P) tensor of the layout before feature-major (each weight
    stored (fan_in, fan_out), the transpose of nn.Linear's) into this one: ``old[:, columns]``.
    For checkpoints written by mlp-sweep before the change (see PackTrainer.load_state_dict)."""
    parts, at = [], 0
    sizes = cfg.layer_sizes
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        parts.append(torch.arange(at, at + fan_in * fan_out).view(fan_in, fan_out).t().reshape(-1))
        at += fan_in * fan_out
        if cfg.bias:
            parts.append(torch.arange(at, at + fan_out))
            at += fan_out
    return torch.cat(parts)


_HOST = torch.device("cpu")


def _per_member(values: Sequence[float | bool], device: torch.device) -> torch.Tensor:
    dtype = torch.bool if isinstance(values[0], bool) else torch.float64
    return torch.tensor(list(values), dtype=dtype, device=device)


def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) in like's dtype, to scale each member's slice of like."""
    shape = (len(values),) + (1,) * (like.dim() - 1)
    return (values if values.dtype == torch.bool else values.to(like.dtype)).view(shape)


def _coefficient(
    on_host: torch.Tensor, on_device: Callable[[], torch.Tensor], like: torch.Tensor
) -> float | torch.Tensor:
    """One per-member value: a Python float when every member has the same (decided on the host
    copy, so a step never waits for the device), else ``on_device()``, the values on like's
    device (the host copy itself on a CPU), as a (K, 1, ...) tensor."""
    if on_host.dtype != torch.bool and bool((on_host == on_host[0]).all()):
        return float(on_host[0])
    return _view(on_device(), like)


# In-place updates with a coefficient that is a float (as torch.optim passes it) or a per-member
# (K, 1) tensor; the float form is the very op torch.optim runs.
def _add_(target: torch.Tensor, a: torch.Tensor, coef) -> torch.Tensor:
    """target += coef * a."""
    if isinstance(coef, float):
        return target.add_(a, alpha=coef)
    return target.addcmul_(a, coef)


def _plus(a: torch.Tensor, b: torch.Tensor, coef) -> torch.Tensor:
    """a + coef * b, rounded alike for a float and a per-member coefficient."""
    if isinstance(coef, float):
        return a.add(b, alpha=coef)
    return torch.addcmul(a, b, coef)  # one rounding, as add(alpha=) (not a + b * coef: two)


def _addcmul_(target: torch.Tensor, a: torch.Tensor, b: torch.Tensor, coef) -> torch.Tensor:
    """target += coef * a * b."""
    if isinstance(coef, float):
        return target.addcmul_(a, b, value=coef)
    return target.addcmul_(a * coef, b)


def _addcdiv_(target: torch.Tensor, a: torch.Tensor, b: torch.Tensor, coef) -> torch.Tensor:
    """target += coef * a / b."""
    if isinstance(coef, float):
        return target.addcdiv_(a, b, value=coef)
    return target.add_(a * coef / b)  # (coef * a) / b, rounded as addcdiv_ rounds it


class StackedOptimizer:
    """One optimizer of model.optim's table over a (K, P) parameter tensor, hyperparameters per
    member (row). ``step(param, grad)`` updates param in place; ``keep(rows)`` drops the other
    members from every state tensor and hyperparameter."""

    def __init__(
        self,
        name: str,
        param: torch.Tensor,
        lrs: Sequence[float],
        hyperparams: Sequence[Mapping[str, float | bool]],
    ) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}")
        self.name = name
        device = param.device
        resolved = [resolve_optimizer(name, hp) for hp in hyperparams]
        host = {"lr": _per_member(lrs, _HOST)}
        for key in OPTIMIZERS[name].hyperparams:
            host[key] = _per_member([r[key] for r in resolved], _HOST)
        self._set_hp(host, device)
        self.step_count = 0
        self.state: dict[str, torch.Tensor] = self._initial_state(param)
        self._coefficients(param)

    def _set_hp(self, host: dict[str, torch.Tensor], device: torch.device) -> None:
        """The hyperparameters, (K,) each: ``_host`` on the CPU, for every decision a step makes
        (which branch, whether members agree), and ``hp`` on the device, for per-member
        arithmetic. A step then never reads a value back from the device: on a GPU each such
        read waits for every kernel queued before it."""
        self._host = host
        self.hp = {key: value.to(device) for key, value in host.items()}

    def _coefficients(self, like: torch.Tensor) -> None:
        """Per-member constants, computed once in float64: a Python float where every member
        has the same value (the usual case: a study fixes all but lr), else (K, 1) tensors;
        and the boolean choices per member (``_choose``)."""

        def derive(hp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            derived = dict(hp)
            for name in ("beta1", "beta2", "alpha", "dampening"):
                if name in hp:
                    derived[f"1-{name}"] = 1 - hp[name]
            if "weight_decay" in hp:
                derived["lr*weight_decay"] = hp["lr"] * hp["weight_decay"]
            return derived

        on_host = derive(self._host)
        on_device = on_host if like.device == _HOST else derive(self.hp)
        self.c = {
            name: _coefficient(on_host[name], lambda name=name: on_device[name], like)
            for name in on_host
        }
        # mask -> (every member, no member: decided on the host; the mask on the device)
        self._masks = {}
        for name in ("nesterov", "amsgrad", "centered", "momentum"):
            if name in self._host:
                host, device = self._host[name], self.hp[name]
                if name == "momentum":
                    host, device = host > 0, device > 0
                self._masks[name] = (bool(host.all()), not bool(host.any()), device)
        self._any_momentum = "momentum" in self._masks and not self._masks["momentum"][1]
        self._groups = self._fused_groups(like.device)
        self._rows: tuple | None = None  # row views of param, grad and state (_fused_step)

    def _choose(self, mask: str, if_true, if_false, like: torch.Tensor) -> torch.Tensor:
        """Per member: if_true() where the boolean hyperparameter ``mask`` holds (for
        "momentum": where it is > 0), else if_false(); each called only when needed."""
        every, none, on_device = self._masks[mask]
        if every:
            return if_true()
        if none:
            return if_false()
        return torch.where(_view(on_device, like), if_true(), if_false())

    def _step_coefficient(self, compute, like: torch.Tensor) -> float | torch.Tensor:
        """compute(hyperparameters) for a coefficient that changes with the step (a bias
        correction, a decayed lr), as ``_coefficient`` gives it."""
        on_host = compute(self._host)
        same = on_host.device == like.device
        return _coefficient(on_host, lambda: on_host if same else compute(self.hp), like)

    # The hyperparameters members must share to be stepped by one call of torch's fused kernel
    # (see _fused_groups).
    _ADAM_HP = ("lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad")
    _FUSED_HP = {
        "adam": _ADAM_HP,
        "adamw": _ADAM_HP,
        "rmsprop": ("lr", "alpha", "eps", "weight_decay"),
        "adagrad": ("lr", "lr_decay", "weight_decay", "eps"),
    }

    def _fused_groups(self, device: torch.device) -> list[tuple[dict, list[int]]] | None:
        """Members with equal hyperparameters, for torch's fused kernel of the optimizer (None: no
        member is stepped by one). Sets ``_put_back``: where the element-wise ops step the pack
        too, the rows the kernel steps (a device LongTensor; see _rmsprop), else None.

        Adam, AdamW and Adagrad take their own kernel wherever torch has one (Adagrad's: CPU
        only). Plain RMSprop members (not centered, no momentum, alpha < 1) take Adam's on a CPU
        (see _as_adam), whatever their neighbours, so that a member's numbers never depend on
        them. CPU packs of the default study's shape measured 8-21 % quicker for RMSprop (one
        pass over the stack instead of six) and 22-32 % for Adagrad at batch 16 and 64 (one
        instead of five). On a GPU RMSprop keeps its element-wise ops: a fixed six kernel
        launches a step, however many groups the learning rates make."""
        self._put_back = None
        host = self._host
        if self.name == "rmsprop":
            if device.type != "cpu":
                return None
            plain = ~host["centered"] & (host["momentum"] == 0) & (host["alpha"] < 1)
            rows = torch.nonzero(plain).view(-1)
            if 0 < len(rows) < len(plain):
                self._put_back = rows.to(device)
            rows = rows.tolist()
        elif self.name in self._FUSED_HP and device.type in OPTIMIZERS[self.name].fused_on:
            rows = list(range(len(host["lr"])))
        else:
            return None
        if not rows:
            return None
        names = self._FUSED_HP[self.name]
        groups: dict[tuple, list[int]] = {}
        for row in rows:
            groups.setdefault(tuple(host[name][row].item() for name in names), []).append(row)
        return [(dict(zip(names, key, strict=True)), members) for key, members in groups.items()]

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.name == "sgd":
            return {"momentum_buffer": torch.zeros_like(param)}
        if self.name in ("adam", "adamw"):
            names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            return {name: torch.zeros_like(param) for name in names}
        if self.name == "rmsprop":
            names = ("square_avg", "momentum_buffer", "grad_avg")
            return {name: torch.zeros_like(param) for name in names}
        init = self.hp["initial_accumulator_value"]
        return {"sum": torch.ones_like(param) * _view(init, param)}

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """One update of every member from its gradient."""
        self.step_count += 1
        getattr(self, f"_{self.name}")(param, grad)

    def _decayed(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        weight_decay = self.c["weight_decay"]
        if isinstance(weight_decay, float) and weight_decay == 0:
            return grad
        return _plus(grad, p, weight_decay)

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        c = self.c
        grad = self._decayed(p, grad)
        if self._any_momentum:
            buf = self.state["momentum_buffer"]
            if self.step_count == 1:
                buf.copy_(grad)  # torch.optim starts the buffer at the first gradient
            else:
                _add_(buf.mul_(c["momentum"]), grad, c["1-dampening"])
            momentum_grad = self._choose(
                "nesterov", lambda: _plus(grad, buf, c["momentum"]), lambda: buf, p
            )
            grad = self._choose("momentum", lambda: momentum_grad, lambda: grad, p)
        _add_(p, grad, -c["lr"])

    def _adam(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        self._adam_like(p, grad, decoupled=False)

    def _adamw(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        self._adam_like(p, grad, decoupled=True)

    def _adam_like(self, p: torch.Tensor, grad: torch.Tensor, *, decoupled: bool) -> None:
        if self._groups is not None:
            names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            self._fused_step(p, grad, names, lambda hp: hp, decoupled)
            return
        c, state, step = self.c, self.state, self.step_count
        if decoupled:
            p.mul_(1 - c["lr*weight_decay"])
        else:
            grad = self._decayed(p, grad)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, c["1-beta1"])
        _addcmul_(exp_avg_sq.mul_(c["beta2"]), grad, grad, c["1-beta2"])
        step_size = self._step_coefficient(lambda hp: hp["lr"] / (1 - hp["beta1"] ** step), p)
        bias_correction2_sqrt = self._step_coefficient(
            lambda hp: torch.sqrt(1 - hp["beta2"] ** step), p
        )

        def amsgrad() -> torch.Tensor:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            return state["max_exp_avg_sq"]

        second = self._choose("amsgrad", amsgrad, lambda: exp_avg_sq, p)
        denom = second.sqrt().div_(bias_correction2_sqrt).add_(c["eps"])
        _addcdiv_(p, exp_avg, denom, -step_size)

    def _row_views(self, p: torch.Tensor, grad: torch.Tensor, state_names: tuple[str, ...]):
        """(hyperparameters, rows) of each group of _fused_groups with the rows of p, grad and
        the state tensors named, each member's row a tensor of its own (kept while p and grad
        are the same tensors), and the step as torch.optim keeps it for a fused kernel: a
        float32 tensor on the device (every member has taken as many). The step tensor is
        incremented in place, as torch.optim does, so that a CUDA graph capturing a step
        replays the increment rather than the count it captured."""
        if self._rows is None or self._rows[0] is not p or self._rows[1] is not grad:
            tensors = (p, grad, *(self.state[name] for name in state_names))
            views = [[[t[row] for row in rows] for t in tensors] for _, rows in self._groups]
            before = float(self.step_count - 1)
            self._rows = (
                p,
                grad,
                views,
                torch.full((), before, dtype=torch.float32, device=p.device),
            )
        step = self._rows[3].add_(1)
        return zip(self._groups, self._rows[2], strict=True), step

    def _fused_step(
        self,
        p: torch.Tensor,
        grad: torch.Tensor,
        state_names: tuple[str, str, str],
        arguments: Callable[[dict], dict],
        decoupled: bool = False,
    ) -> None:
        """One call of torch's fused Adam (or AdamW) kernel per group of equal members: the
        state tensors named are the kernel's exp_avg, exp_avg_sq and max_exp_avg_sq, and
        arguments(group's hyperparameters) its lr, beta1, beta2, weight_decay, eps and amsgrad."""
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        groups, step = self._row_views(p, grad, state_names)
        for (hp, rows), views in groups:
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = views
            args = arguments(hp)
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs if args["amsgrad"] else [],
                [step] * len(rows),
                lr=args["lr"],
                beta1=args["beta1"],
                beta2=args["beta2"],
                weight_decay=args["weight_decay"],
                eps=args["eps"],
                amsgrad=bool(args["amsgrad"]),
                maximize=False,
            )

    def _rmsprop(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        if self._groups is None:  # no plain member, or not on a CPU
            self._rmsprop_elementwise(p, grad)
            return
        rows = self._put_back
        if rows is not None:
            # Plain members beside others: the element-wise ops step every row, then the plain
            # rows are put back as they were, for the fused kernel.
            tensors = (p, self.state["square_avg"])
            before = [t.index_select(0, rows) for t in tensors]
            self._rmsprop_elementwise(p, grad)
            for t, kept in zip(tensors, before, strict=True):
                t.index_copy_(0, rows, kept)
        self._fused_step(p, grad, ("grad_avg", "square_avg", "grad_avg"), self._as_adam)

    def _rmsprop_elementwise(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        c, state = self.c, self.state
        grad = self._decayed(p, grad)
        square_avg = state["square_avg"]
        _addcmul_(square_avg.mul_(c["alpha"]), grad, grad, c["1-alpha"])

        def centered() -> torch.Tensor:
            state["grad_avg"].lerp_(grad, c["1-alpha"])
            return square_avg.addcmul(state["grad_avg"], state["grad_avg"], value=-1).sqrt_()

        avg = self._choose("centered", centered, lambda: square_avg.sqrt(), p).add_(c["eps"])
        if self._any_momentum:
            buf = state["momentum_buffer"]
            buf.mul_(c["momentum"]).addcdiv_(grad, avg)
            # members without momentum round as below, (lr * grad) / avg, so their numbers do
            # not depend on whether a neighbour in the pack has momentum
            update = self._choose(
                "momentum", lambda: buf * c["lr"], lambda: grad * c["lr"] / avg, p
            )
            p.sub_(update)
        else:
            p.addcdiv_(grad * c["lr"], avg, value=-1)

    def _as_adam(self, hp: dict) -> dict:
        """Plain RMSprop's step as the fused Adam kernel's arguments. With beta1 = 0 the kernel's
        exp_avg (grad_avg here, which plain RMSprop has no use for) is the gradient, its first
        bias correction is 1, and beta2 = alpha makes exp_avg_sq RMSprop's square_avg. Its second
        bias correction divides sqrt(square_avg) by s = sqrt(1 - alpha^t); lr and eps divided by
        s undo it: (lr/s) g / (sqrt(v)/s + eps/s) = lr g / (sqrt(v) + eps)."""
        s = math.sqrt(1 - hp["alpha"] ** self.step_count)
        return {
            "lr": hp["lr"] / s,
            "beta1": 0.0,
            "beta2": hp["alpha"],
            "weight_decay": hp["weight_decay"],
            "eps": hp["eps"] / s,
            "amsgrad": False,
        }

    def _adagrad(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        if self._groups is not None:  # torch.optim.Adagrad(fused=True)'s step
            groups, step = self._row_views(p, grad, ("sum",))
            for (hp, rows), (params, grads, sums) in groups:
                torch._fused_adagrad_(
                    params,
                    grads,
                    sums,
                    [step] * len(rows),
                    lr=hp["lr"],
                    lr_decay=hp["lr_decay"],
                    weight_decay=hp["weight_decay"],
                    eps=hp["eps"],
                    maximize=False,
                )
            return
        c, step = self.c, self.step_count
        grad = self._decayed(p, grad)
        clr = self._step_coefficient(lambda hp: hp["lr"] / (1 + (step - 1) * hp["lr_decay"]), p)
        state_sum = self.state["sum"]
        state_sum.addcmul_(grad, grad)
        std = state_sum.sqrt().add_(c["eps"])
        _addcdiv_(p, grad, std, -clr)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at rows (a LongTensor of positions in the stack)."""
        self.state = {key: t.index_select(0, rows.to(t.device)) for key, t in self.state.items()}
        like = next(iter(self.state.values()))
        self._set_hp({key: value[rows.to(_HOST)] for key, value in self._host.items()}, like.device)
        self._coefficients(like)

    def state_dict(self) -> dict:
        return {"step": self.step_count, "hp": dict(self.hp), "state": dict(self.state)}

    def load_state_dict(self, state: Mapping) -> None:
        self.step_count = int(state["step"])
        self.state = {key: t.clone() for key, t in state["state"].items()}
        like = next(iter(self.state.values()))
        host = {key: value.to(_HOST, copy=True) for key, value in state["hp"].items()}
        self._set_hp(host, like.device)
        self._coefficients(like)


def stacked_loss(cfg: MLPConfig, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member sum of the loss over rows: out (K, O, B) feature-major, targets (K, B[, O]) or
    shared (B[, O]) -> (K,). Divide by B (cross_entropy) or B * O (mse) for the batch mean."""
    k, rows = out.shape[0], out.shape[2]
    if cfg.loss == "cross_entropy":
        targets = targets.expand(k, rows)
        return F.cross_entropy(out, targets, reduction="none").sum(dim=1)
    targets = targets.transpose(-1, -2).expand(out.shape)
    return F.mse_loss(out, targets, reduction="none").sum(dim=(1, 2))


def loss_count(cfg: MLPConfig, rows: int) -> int:
    """How many terms the batch-mean loss averages over for rows rows."""
    return rows if cfg.loss == "cross_entropy" else rows * cfg.output_size


__all__ = [
    "StackedMLP", "StackedOptimizer", "columns_from_batch_major", "loss_count", "stacked_loss",
]  # fmt: skip
