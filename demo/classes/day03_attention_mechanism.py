"""Days 3-5 demo students: one typical mistake each, written the way students write it."""

STUDENTS = {
    # The textbook formula, typed in directly: fine until a logit passes ~709.
    "ivy_d03_naive_softmax": {"*": "solution", "softmax": (
        "def softmax(x, axis=-1):\n"
        "    exps = np.exp(x)\n"
        "    return exps / np.sum(exps, axis=axis, keepdims=True)\n")},
    # Reads q^T W k left to right, but with W the wrong way round.
    "jay_d03_W_transposed": {"*": "solution", "multiplicative_score": (
        "def multiplicative_score(query, keys, W):\n"
        "    scores = []\n"
        "    for k in keys:\n"
        "        scores.append(query @ W.T @ k)\n"
        "    return np.array(scores)\n")},
    # matshow, and the labels put on the axes the other way round.
    "kai_d03_swapped_labels": {"*": "solution", "plot_attention": (
        "def plot_attention(weights, query_labels, key_labels):\n"
        "    fig, ax = plt.subplots()\n"
        "    im = ax.matshow(weights)\n"
        "    ax.set_xticks(np.arange(len(query_labels)))\n"
        "    ax.set_xticklabels(query_labels)\n"
        "    ax.set_yticks(np.arange(len(key_labels)))\n"
        "    ax.set_yticklabels(key_labels)\n"
        "    plt.colorbar(im)\n"
        "    return fig\n")},
    # Attention by hand, with the scores normalised by their sum (no exponential), rounded on the way.
    "mia_d03_hand_no_exp": {"*": "solution", "hand_attention": (
        "hand_attention = {\n"
        "    \"scores\": [2, 1, 1.5],\n"
        "    \"weights\": [0.44, 0.22, 0.33],\n"
        "    \"context\": [0.55, 0.77],\n"
        "}\n")},
    # Returns the two results in the order they were computed.
    "liv_d03_swapped_return": {"*": "solution", "attention": (
        "def attention(query, keys, values, score_fn=dot_score):\n"
        "    weights = softmax(score_fn(query, keys))\n"
        "    context = np.sum(weights[:, None] * values, axis=0)\n"
        "    return weights, context\n")},
}
