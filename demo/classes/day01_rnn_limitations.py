"""Days 1-2 demo students: one typical mistake each, written the way students write."""

STUDENTS = {
    # Keeps the initial state in the list of states: T+1 outputs.
    "ivy_d01_keeps_h0": {"*": "solution", "rnn_forward": (
        "def rnn_forward(x, h0, W_xh, W_hh, b):\n"
        "    hs = [h0]\n"
        "    for t in range(x.shape[0]):\n"
        "        h_new = np.tanh(np.dot(x[t], W_xh) + np.dot(hs[-1], W_hh) + b)\n"
        "        hs.append(h_new)\n"
        "    return np.array(hs)\n")},
    # Copies the textbook's column-vector formula: W_hh @ h, which is h @ W_hh.T here.
    "lea_d01_textbook_order": {"*": "solution", "rnn_forward": (
        "def rnn_forward(x, h0, W_xh, W_hh, b):\n"
        "    T = x.shape[0]\n"
        "    h = h0\n"
        "    states = np.zeros((T, h0.shape[0], h0.shape[1]))\n"
        "    for t in range(T):\n"
        "        # h_t = tanh(W_hh h_{t-1} + W_xh x_t + b), as in the lecture notes\n"
        "        h = np.tanh((W_hh @ h.T).T + x[t] @ W_xh + b)\n"
        "        states[t] = h\n"
        "    return states\n")},
    # Uses np.linalg.norm without ord=2: the Frobenius norm.
    "jon_d01_frobenius": {"*": "solution", "hidden_gradient_norms": (
        "def hidden_gradient_norms(hs, W_hh):\n"
        "    T, H = hs.shape\n"
        "    norms = np.zeros(T)\n"
        "    for t in range(T):\n"
        "        J = np.eye(H)\n"
        "        for k in range(T - 1, t, -1):\n"
        "            J = J @ np.diag(1 - hs[k] ** 2) @ W_hh.T\n"
        "        norms[t] = np.linalg.norm(J)\n"
        "    return norms\n")},
    # Lists the norms by distance (norms[0] = 1), and blames tanh alone in the quiz.
    "kai_d01_by_distance": {"*": "solution", "hidden_gradient_norms": (
        "def hidden_gradient_norms(hs, W_hh):\n"
        "    T, H = hs.shape\n"
        "    grad = np.eye(H)\n"
        "    norms = [1.0]\n"
        "    for t in reversed(range(T - 1)):\n"
        "        grad = grad @ (np.diag(1 - hs[t + 1] ** 2) @ W_hh.T)\n"
        "        norms.append(np.linalg.norm(grad, 2))\n"
        "    return np.array(norms)\n"),
        "quiz_rnn_long_range": 'quiz_rnn_long_range = "D"\n'},
}
