"""`refssm generate`: sample text from a trained language model, one step at a time.

    refssm generate runs/spikingssm-fortunes --prompt "The " --length 200 --temperature 0.8 --seed 0

The prompt is fed through the network's recurrence (refssm.models.stream.step, which equals the
parallel forward), then each next token is drawn from softmax(logits / temperature) over the real
tokens (id 0, padding, is never drawn) and fed back. Characters are joined as they are, words with
spaces. Uses the checkpoint's best.h5 if the run has one, else checkpoint.h5.
"""

import os

import numpy as np

from refssm import checkpoint, models
from refssm._checks import in_range, positive_int
from refssm.models import stream


def encode(prompt, vocab):
    """Token ids of `prompt` under `vocab` (id -> symbol): per character when every symbol is a single
    character, else per whitespace-separated word."""
    index = {sym: i for i, sym in enumerate(vocab) if i > 0}
    chars = all(len(sym) == 1 for sym in vocab[1:])
    pieces = list(prompt) if chars else prompt.split()
    missing = sorted({p for p in pieces if p not in index})
    if missing:
        raise ValueError(f"--prompt holds symbols outside the model's vocabulary: {missing[:10]}")
    return [index[p] for p in pieces], ("" if chars else " ")


def generate(params, state, cfg, prompt_ids, length, temperature, rng, aux=None):
    """Feed prompt_ids (a non-empty list) then sample `length` tokens; -> the sampled ids."""
    carry = stream.init_carry(cfg, 1, rng)
    h = None
    for token in prompt_ids:
        h, carry = stream.step(params, state, cfg, carry, np.array([token]), aux)
    out = []
    for _ in range(length):
        logits = stream.lm_logits(params, h)[0].astype(np.float64) / temperature
        logits[0] = -np.inf                                                   # padding is not a token
        p = np.exp(logits - logits.max())
        token = int(rng.choice(len(p), p=p / p.sum()))
        out.append(token)
        h, carry = stream.step(params, state, cfg, carry, np.array([token]), aux)
    return out


def _cmd_generate(args):
    from refssm import datasets
    from refssm.train import BEST_NAME, CKPT_NAME, _aux

    path = os.path.join(args.run, BEST_NAME)
    if not os.path.exists(path):
        path = os.path.join(args.run, CKPT_NAME)
    ckpt = checkpoint.load(path)
    cfg, opts = models.upgrade_config(ckpt.config["model"]), ckpt.config["train"]
    if cfg["head"] != "lm":
        raise ValueError(f"RUN must hold a language model (head 'lm'); {args.run} holds head {cfg['head']!r}")
    positive_int("--length", args.length)
    in_range("--temperature", args.temperature, 0.0, None, lo_open=True)
    data = datasets.load(opts["task"], **({} if opts["data_dir"] is None else {"data_dir": opts["data_dir"]}))
    if data.vocab is None:                                                    # byte level: id = byte + 1
        vocab = ("<pad>",) + tuple(chr(b) for b in range(256))
    else:
        vocab = data.vocab
    ids, sep = encode(args.prompt, vocab)
    if not ids:
        raise ValueError("--prompt must hold at least one token")
    out = generate(ckpt.params, ckpt.extra or {}, cfg, ids, args.length, args.temperature,
                   np.random.default_rng(args.seed), _aux(cfg))
    print(args.prompt + sep + sep.join(vocab[i] for i in out))
    return 0


def add_parser(sub):
    p = sub.add_parser("generate", help="sample text from a trained language model (step by step)",
                       description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory of refssm train on a language-modelling task")
    p.add_argument("--prompt", default="The ", help="text to start from (default 'The ')")
    p.add_argument("--length", type=int, default=200, help="tokens to sample (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature > 0 (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_cmd_generate)
