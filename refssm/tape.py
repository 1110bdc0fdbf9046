"""A minimal tape: the models' reverse pass, generic, from the operations' VJPs.

A model's forward pass is written once, as calls `t.op(name, *args)` on a Tape. Each call runs the
operation's forward (from refssm.backend, on the tape's backend) and records its VJP with the
context. `t.backward(out, g)` replays the records in reverse, summing the gradients that reach each
value; it returns the gradient of every parameter. Nothing about a model's backward is written by
hand, so a new model needs only its forward.

    t = Tape(params, backend="numba")
    h = t.op("linear", x, t.param("enc.W"), t.param("enc.b"))      # Var: value h.value, id h.id
    ...
    grads = t.backward(logits, glogits)                             # {"enc.W": ..., ...}

Differentiable arguments are `Var`s and come first in an operation's signature; the VJP returns their
gradients in that order (one array when there is one; gradients for trailing non-Var arguments, e.g.
a neuron's threshold given as a constant, are ignored). Any other argument (rng, flags, constants) is
passed through. An operation may return extra values after (y, ctx), e.g. BatchNorm's new running
statistics: `t.op` then returns (Var, *extras).
"""

from refssm import backend as _backend


class Var:
    """A value on the tape: `value` (an array) and `id` (its slot for gradients)."""

    __slots__ = ("value", "id")

    def __init__(self, value, id):
        self.value, self.id = value, id

    @property
    def shape(self):
        return self.value.shape


class Tape:
    def __init__(self, params, backend="auto"):
        self.params = params
        self.backend = backend
        self._records = []                      # (vjp, ctx, output id, input ids)
        self._param_vars = {}                   # parameter name -> Var
        self._next = 0

    def _new(self, value):
        self._next += 1
        return Var(value, self._next)

    def input(self, value):
        """A constant input (no gradient wanted)."""
        return self._new(value)

    def param(self, name):
        """The Var of parameter `name` (one per name, so its gradients accumulate)."""
        if name not in self._param_vars:
            self._param_vars[name] = self._new(self.params[name])
        return self._param_vars[name]

    def op(self, name, *args, **kwargs):
        """Run operation `name` (refssm.backend.OPS) forward and record its VJP."""
        fwd, vjp = _backend.op(name, self.backend)
        return self.call(fwd, vjp, *args, **kwargs)

    def call(self, fwd, vjp, *args, **kwargs):
        """Run `fwd` on the values of `args` and record `vjp` (for a model's own small functions)."""
        n_diff = 0
        while n_diff < len(args) and isinstance(args[n_diff], Var):
            n_diff += 1
        if any(isinstance(a, Var) for a in args[n_diff:]):
            raise TypeError(f"{getattr(fwd, '__name__', fwd)}: differentiable (Var) arguments must come first")
        out = fwd(*(a.value if isinstance(a, Var) else a for a in args), **kwargs)
        y, ctx, extras = out[0], out[1], out[2:]
        v = self._new(y)
        self._records.append((vjp, ctx, v.id, tuple(a.id for a in args[:n_diff])))
        return (v, *extras) if extras else v

    def context(self, v):
        """The ctx recorded by the operation that produced Var v (e.g. to count a GSU's ternary operands)."""
        for _, ctx, out_id, _ in reversed(self._records):
            if out_id == v.id:
                return ctx
        raise KeyError(f"no operation on this tape produced Var {v.id}")

    def backward(self, out, g):
        """Gradients of every parameter used, given g = dL/d(out.value). Consumes the tape."""
        grads = {out.id: g}
        while self._records:
            vjp, ctx, out_id, in_ids = self._records.pop()
            gy = grads.pop(out_id, None)
            if gy is None or not in_ids:                                       # unused downstream
                continue
            gin = vjp(ctx, gy)
            if len(in_ids) == 1 and not isinstance(gin, tuple):
                gin = (gin,)
            for i, gi in zip(in_ids, gin):
                grads[i] = gi if i not in grads else grads[i] + gi
        return {name: _like(grads.get(v.id), v.value) for name, v in self._param_vars.items()}


def _like(g, value):
    """A parameter's gradient in its own dtype, on its device (zeros for a parameter the output does not
    depend on)."""
    xp = _backend.array_module(value)
    if g is None:
        return xp.zeros_like(value)
    return xp.asarray(g).astype(value.dtype, copy=False).reshape(value.shape)
