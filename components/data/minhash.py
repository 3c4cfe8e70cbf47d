"""The pieces of deduplication: text normalisation, MinHash signatures, LSH buckets, union-find.

Nothing here touches storage or Ray; `components/data/dedup.py` composes these into the stage.

Normalisation (`normalize_text`), used by both the exact hash and the shingles:

1. lower-case (`str.lower`);
2. every character that is neither a word character (letter, digit, underscore in any script) nor
   whitespace -- punctuation and symbols such as `,.;:!?"'()-/$%` -- becomes a space;
3. runs of whitespace (spaces, tabs, newlines) collapse to one space; leading/trailing space goes.

So "Hello,  World!\\n" and "hello world" are the same text, while digits and accents still count
("2019" != "2020", "resume" != "résumé"). Replacing punctuation by a space (rather than deleting it)
makes "end.Next" and "end. Next" agree, which text extraction often gets either way.

Shingles are the word n-grams of the normalised text (words = `split()` on spaces), joined by a space
and hashed to 64 bits with xxh64; a text shorter than n words is one shingle of all its words, and an
empty text has none (it takes part in exact dedup only). A document's MinHash signature is datasketch's
`MinHash(num_perm=bands*rows, scheme="affine64", hashfunc=xxh64)` over that shingle set, and its
band keys are the xxh3-64 hashes of each band's `rows` consecutive signature values: two documents
are LSH candidates when at least one band key is equal, which happens with probability
`1 - (1 - J^rows)^bands` for Jaccard similarity J.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import xxhash
from datasketch import MinHash

_NOT_WORD = re.compile(r"[^\w\s]+")


def normalize_text(text: str | None) -> str:
    """Lower-case, punctuation and symbols to spaces, whitespace collapsed (see the module docstring)."""
    if not text:
        return ""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def exact_hash(normalized: str) -> tuple[int, int]:
    """128-bit hash of a normalised text as two unsigned 64-bit halves (high, low). 128 bits because a
    false match here silently drops a unique document: at 10^10 documents the chance of any collision
    is still about 10^-19."""
    digest = xxhash.xxh3_128_intdigest(normalized.encode())
    return digest >> 64, digest & 0xFFFF_FFFF_FFFF_FFFF


def shingles(words: Sequence[bytes], n: int) -> list[bytes]:
    """The word n-grams of `words` joined by a space; fewer than n words give one shingle of all."""
    if len(words) < n:
        return [b" ".join(words)] if words else []
    # zip of shifted views builds the n-grams without slicing the list at every position
    return [b" ".join(gram) for gram in zip(*(words[k:] for k in range(n)), strict=False)]


def shingle_hashes(text: str | None, n: int) -> np.ndarray:
    """The 64-bit xxh64 hashes of a text's shingles (the set that MinHash estimates), as uint64."""
    grams = shingles(normalize_text(text).encode().split(), n)
    return np.fromiter(map(xxhash.xxh64_intdigest, grams), dtype=np.uint64, count=len(grams))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets of shingle hashes (arrays, duplicates allowed)."""
    a, b = np.unique(a), np.unique(b)
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def lsh_threshold(bands: int, rows: int) -> float:
    """The Jaccard similarity where the candidate probability rises steepest: about (1/b)^(1/r)."""
    return (1.0 / bands) ** (1.0 / rows)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard `similarity` share at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


class MinHasher:
    """MinHash signatures and LSH band keys of texts, for fixed (n, bands, rows, seed).

    The permutations are drawn once and shared by every signature (drawing them costs more than
    hashing a short document); every worker builds the same ones from the same seed.
    """

    def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1):
        self.ngram, self.bands, self.rows, self.seed = ngram, bands, rows, seed
        self.num_perm = bands * rows
        self._template = self._minhash()

    def _minhash(self, permutations: np.ndarray | None = None) -> MinHash:
        return MinHash(
            self.num_perm,
            seed=self.seed,
            hashfunc=xxhash.xxh64_intdigest,
            scheme="affine64",
            permutations=permutations,
        )

    def minhash(self, words: Sequence[bytes]) -> MinHash | None:
        """datasketch MinHash of the shingles of already normalised words; None when there are none."""
        grams = shingles(words, self.ngram)
        if not grams:
            return None
        m = self._minhash(self._template.permutations)
        m.update_batch(grams)  # one numpy pass over all shingles, ~25x faster than update() per shingle
        return m

    def signature(self, text: str | None) -> np.ndarray | None:
        """The num_perm uint64 MinHash values of a text; None for a text without words."""
        m = self.minhash(normalize_text(text).encode().split())
        return None if m is None else m.hashvalues

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One 64-bit key per band: the xxh3-64 of that band's `rows` signature values."""
        view = np.ascontiguousarray(signature, dtype="<u8").reshape(self.bands, self.rows)
        return [xxhash.xxh3_64_intdigest(band.tobytes()) for band in view]


def bucket_edges(doc_index: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Candidate pairs from LSH buckets: documents whose keys are all equal share a bucket.

    `doc_index` (int64) names each document; `keys` are equally long uint64 arrays (one for a band,
    two for a 128-bit exact hash). Every bucket with more than one document yields a star of edges
    from its smallest document index to each other member -- k-1 edges instead of k(k-1)/2, which is
    all that union-find needs. Returns an (E, 2) int64 array with `edge[:, 0] < edge[:, 1]`.
    """
    if len(doc_index) < 2:
        return np.empty((0, 2), dtype=np.int64)
    # lexsort's last key is the primary one: sort by the keys, then by document within a bucket, so
    # each bucket's first element is its smallest document.
    order = np.lexsort((doc_index, *reversed(keys)))
    docs = doc_index[order]
    same = np.ones(len(docs) - 1, dtype=bool)  # element i+1 is in element i's bucket
    for key in keys:
        sorted_key = key[order]
        same &= sorted_key[1:] == sorted_key[:-1]
    starts = np.concatenate(([True], ~same))  # where each bucket begins
    hub = docs[starts][np.cumsum(starts) - 1]
    members = ~starts
    return np.stack([hub[members], docs[members]], axis=1)


class UnionFind:
    """Disjoint sets over 0..n-1 with path compression and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression: point the whole path at the root
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> bool:
        """Merge the sets of a and b; False when they were already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def roots(self) -> list[int]:
        return [self.find(x) for x in range(len(self.parent))]
