"""Draft tokens for greedy speculative decoding, from n-grams (no draft model).

A decode step of the embedded model on a CPU costs mostly fixed per-step work (Python and
operator launches around small matrix products), so checking several tokens in one step
costs little more than one token. ``MLLM.generate`` therefore asks an ``NgramDrafter`` for
up to k likely next tokens, runs the drafted tokens through the decoder in one step, and
keeps the longest drafted prefix that greedy decoding would have produced itself, plus
the model's own next token after it: greedy output is unchanged, only the number of steps
drops (prompt-lookup / n-gram speculative decoding).

Drafts come from two n-gram tables, longest context first (``max_n`` down to 1):
- the current sequence (prompt + tokens so far): the answer repeats words of the
  instruction and of its own rationale ("the reference is the yellow cube ... closest to
  it"); the most recent continuation wins;
- earlier answers of the same model (``learn``): rationales and answers follow a few
  phrasings, so after some answers most template words are predicted; the most frequent
  continuation wins, and how often it won says how sure it is.
A drafted token that is not kept still costs: on the 2-core CPU a step over 2-7 tokens
takes ~1.4x a one-token step (small matrix products switch from matrix-vector kernels),
so ``draft`` stops at the first unsure token (measured on lens-tiny's answers: earlier
answers' continuations seen >= 80 % of the time were right 91 % of the time, < 50 %: 16 %).
Both are bounded: the history keeps at most ``max_contexts`` contexts with at most
``max_followers`` continuations each; the sequence index lives for one generation.

A bundle may ship a starting history (``draft_ngrams.json``, ``save``/``load``: JSON,
bounded, validated), learned from the model's own answers to training scenes, so that the
first instructions after start-up are drafted as well as later ones.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lens_ros.model.types import ModelFileError

DRAFTS_FORMAT = "lens_ros.draft_ngrams"


class SequenceIndex:
    """n-gram -> position of the token that followed its latest occurrence, for one sequence."""

    def __init__(self, max_n: int) -> None:
        self.max_n = max_n
        self.tokens: list[int] = []
        self.next_at: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: list[int]) -> None:
        for tok in tokens:
            p = len(self.tokens)
            for n in range(1, min(self.max_n, p) + 1):
                self.next_at[tuple(self.tokens[p - n : p])] = p
            self.tokens.append(int(tok))

    def follower(self, context: tuple[int, ...]) -> int | None:
        p = self.next_at.get(context)
        return None if p is None else self.tokens[p]


class NgramDrafter:
    """Bounded n-gram tables of earlier answers plus the current sequence -> draft tokens."""

    def __init__(
        self,
        max_n: int = 3,
        max_contexts: int = 50_000,
        max_followers: int = 4,
        sure_share: float = 0.8,
        min_share: float = 0.5,
        min_sequence_n: int = 2,
    ) -> None:
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        self.max_n = max_n
        self.sure_share = sure_share
        self.min_share = min_share
        self.min_sequence_n = min_sequence_n
        self.max_contexts = max_contexts
        self.max_followers = max_followers
        self.history: dict[tuple[int, ...], Counter] = {}
        self.learned_sequences = 0

    def learn(self, tokens: list[int]) -> None:
        """Count the n-grams of one answer (give it a few prompt tokens before the answer)."""
        tokens = [int(t) for t in tokens]
        for p in range(1, len(tokens)):
            for n in range(1, min(self.max_n, p) + 1):
                context = tuple(tokens[p - n : p])
                followers = self.history.get(context)
                if followers is None:
                    if len(self.history) >= self.max_contexts:
                        continue
                    followers = self.history[context] = Counter()
                if tokens[p] in followers or len(followers) < self.max_followers:
                    followers[tokens[p]] += 1
        self.learned_sequences += 1

    def draft(self, index: SequenceIndex, k: int) -> list[int]:
        """Up to ``k`` tokens likely to follow ``index.tokens`` (fewer, or none, where unsure).

        Per token, the longest context that either table knows decides: an earlier answer's
        continuation seen in at least ``sure_share`` of its occurrences, else the sequence's
        own latest continuation (contexts of 2+ tokens: single-token repeats were right 8 %
        of the time), else an earlier answer's continuation seen in at least ``min_share``;
        otherwise drafting stops there (a weak guess costs a wider step and is rarely kept).
        """
        out: list[int] = []
        for _ in range(k):
            tok = self._next(index, out)
            if tok is None:
                break
            out.append(tok)
        return out

    def _next(self, index: SequenceIndex, drafted: list[int]) -> int | None:
        recent = index.tokens[-self.max_n :] + drafted
        for n in range(min(self.max_n, len(recent)), 0, -1):
            context = tuple(recent[-n:])
            seen = index.follower(context)
            in_sequence = seen if n >= self.min_sequence_n else None
            followers = self.history.get(context)
            best, share = None, 0.0
            if followers:
                best, count = followers.most_common(1)[0]
                share = count / sum(followers.values())
            if best is not None and share >= self.sure_share:
                return best
            if in_sequence is not None:
                return in_sequence
            if best is not None and share >= self.min_share:
                return best
            if best is not None or seen is not None:
                return None  # known but unsure: a shorter context would only guess worse
        return None

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": DRAFTS_FORMAT,
            "max_n": self.max_n,
            "learned_sequences": self.learned_sequences,
            "contexts": [[list(c), [[t, n] for t, n in f.most_common()]] for c, f in self.history.items()],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, vocab_size: int, **kwargs) -> NgramDrafter:
        """A drafter starting from a saved history; ``ModelFileError`` names what is wrong.

        Token ids must lie in [0, vocab_size); the file may not exceed the drafter's bounds.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: cannot read draft n-grams ({exc})") from exc
        if not isinstance(raw, dict) or raw.get("format") != DRAFTS_FORMAT:
            raise ModelFileError(f"{path}: not a draft n-gram file (format != {DRAFTS_FORMAT!r})")
        drafter = cls(max_n=int(raw.get("max_n", 3)), **kwargs)
        contexts = raw.get("contexts")
        if not isinstance(contexts, list) or len(contexts) > drafter.max_contexts:
            raise ModelFileError(f"{path}: 'contexts' must be a list of at most {drafter.max_contexts} entries")

        def token(value) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < vocab_size:
                raise ModelFileError(f"{path}: token id {value!r} outside the vocabulary (0..{vocab_size - 1})")
            return value

        for entry in contexts:
            try:
                context, followers = entry
                key = tuple(token(t) for t in context)
                counts = Counter({token(t): int(n) for t, n in followers[: drafter.max_followers]})
            except ModelFileError:
                raise
            except (TypeError, ValueError) as exc:
                raise ModelFileError(f"{path}: malformed entry {str(entry)[:80]} ({exc})") from exc
            if not 1 <= len(key) <= drafter.max_n or any(n <= 0 for n in counts.values()):
                raise ModelFileError(f"{path}: malformed entry {str(entry)[:80]}")
            drafter.history[key] = counts
        drafter.learned_sequences = int(raw.get("learned_sequences", 0))
        return drafter
