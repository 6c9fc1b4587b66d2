"""Days 6-7 demo students: one typical mistake each, and one hostile submission."""

# Attention written the way students often write it, with one deliberate slip each.
ATTENTION = '''def scaled_dot_product_attention(query, key, value, mask=None):
    d_k = query.shape[-1]
    scores = torch.matmul(query, key.transpose(-2, -1)){scale}
    if mask is not None:
        scores = scores.masked_fill({masked}, {fill})
    weights = F.softmax(scores, dim={dim})
    if mask is not None:
        weights = torch.nan_to_num(weights)
    return torch.matmul(weights, value), weights
'''


def attention(scale=" / math.sqrt(d_k)", masked="mask == 0", fill='float("-inf")', dim=-1):
    return ATTENTION.format(scale=scale, masked=masked, fill=fill, dim=dim)


HOSTILE_CELLS = {
    # Patch the comparison functions a notebook-kernel grader would trust.
    "+patch": "import numpy as np\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
              "np.allclose = lambda *a, **k: True\nnp.testing.assert_allclose = lambda *a, **k: None\n"
              "print('All tests passed! Score: 100/100')\n",
    # A tensor that claims to equal anything.
    "scaled_dot_product_attention": (
        "class Liar(torch.Tensor):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def allclose(self, *a, **k):\n        return True\n"
        "def scaled_dot_product_attention(query, key, value, mask=None):\n"
        "    z = torch.zeros(*query.shape[:-1], value.shape[-1], dtype=query.dtype).as_subclass(Liar)\n"
        "    w = torch.zeros(*query.shape[:-1], key.shape[-2], dtype=query.dtype).as_subclass(Liar)\n"
        "    return z, w\n"
    ),
    # An endless loop inside a graded function.
    "attention_flops": "def attention_flops(n_queries, n_keys, d_k, d_v):\n    while True:\n        pass\n",
    # Leaves the process the moment it is called.
    "causal_mask": "import os\ndef causal_mask(size, device=None):\n    os._exit(0)\n",
    # A correct answer, to show the rest of the notebook is still graded.
    "padding_mask": "def padding_mask(tokens, pad_id):\n    return (tokens != pad_id).unsqueeze(1)\n",
    # Tries to end the run early, twice.
    "+exit": "import sys\nsys.exit(0)\n",
    "+hard_exit": "import os\nos._exit(0)\n",
}

STUDENTS = {
    "cleo_no_scaling": {"*": "solution", "scaled_dot_product_attention": attention(scale="")},
    "dev_inverted_mask": {"*": "solution", "scaled_dot_product_attention": attention(masked="mask")},
    "eli_query_softmax": {"*": "solution", "scaled_dot_product_attention": attention(dim=-2)},
    "fay_minus_1e9": {"*": "solution", "scaled_dot_product_attention": (
        "def scaled_dot_product_attention(query, key, value, mask=None):\n"
        "    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))\n"
        "    if mask is not None:\n"
        "        scores = scores.masked_fill(~mask, -1e9)\n"
        "    weights = scores.softmax(-1)\n"
        "    return weights @ value, weights\n")},
    "gus_mask_shifted": {"*": "solution", "causal_mask": (
        "def causal_mask(size, device=None):\n"
        "    return torch.ones(size, size, device=device).tril(diagonal=-1).bool()\n"),
        "padding_mask": "def padding_mask(tokens, pad_id):\n    return (tokens != pad_id).unsqueeze(-1)\n"},
    "hal_hostile": dict(HOSTILE_CELLS, **{"*": "solution"}),
    # A wrong answer dressed up: every comparison function it can reach says "equal".
    "ivan_patcher": {
        "*": "solution",
        "scaled_dot_product_attention": (
            "def scaled_dot_product_attention(query, key, value, mask=None):\n"
            "    w = torch.zeros(*query.shape[:-1], key.shape[-2], dtype=query.dtype)\n"
            "    return torch.zeros(*query.shape[:-1], value.shape[-1], dtype=query.dtype), w\n"),
        "+patch": (
            "import numpy as np, torch\n"
            "import autograder.compare, autograder.wire\n"
            "torch.allclose = lambda *a, **k: True\n"
            "torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)\n"
            "np.allclose = lambda *a, **k: True\n"
            "np.testing.assert_allclose = lambda *a, **k: None\n"
            "autograder.compare.compare_value = lambda *a, **k: []\n"
            "autograder.compare.judge_case = lambda *a, **k: None\n"
            "print('scaled_dot_product_attention: PASS 17/17. Total score: 8/8')\n"),
    },
}


