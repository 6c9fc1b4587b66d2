"""Days 13-14 demo students: one typical training mistake each, written the way students write them."""

STUDENTS = {
    # The Noam schedule with max() where min() belongs: the rate is huge during warm-up. Their
    # make_optimizer is right and uses this noam_lr, so it must not lose points a second time.
    "nia_d13_noam_max": {"*": "solution", "noam_lr": (
        "def noam_lr(step, d_model, warmup_steps, factor=1.0):\n"
        "    step = max(step, 1)\n"
        "    lr = d_model ** (-0.5) * max(step ** (-0.5), step * warmup_steps ** (-1.5))\n"
        "    return factor * lr\n")},
    # Label smoothing as in many blog posts: 1 - eps on the right class, eps / (V - 1) on the others.
    # Their train_step uses the built-in loss, so only label_smoothing_loss is wrong.
    "quinn_d13_smoothing_v_minus_1": {"*": "solution", "label_smoothing_loss": (
        "def label_smoothing_loss(logits, target, smoothing, pad_id=None):\n"
        "    V = logits.shape[-1]\n"
        "    logits = logits.reshape(-1, V)\n"
        "    target = target.reshape(-1)\n"
        "    log_probs = F.log_softmax(logits, dim=-1)\n"
        "    with torch.no_grad():\n"
        "        true_dist = torch.full_like(log_probs, smoothing / (V - 1))\n"
        "        true_dist.scatter_(1, target.unsqueeze(1), 1.0 - smoothing)\n"
        "    loss = -(true_dist * log_probs).sum(dim=-1)\n"
        "    if pad_id is not None:\n"
        "        loss = loss[target != pad_id]\n"
        "    if loss.numel() == 0:\n"
        "        return logits.sum() * 0.0\n"
        "    return loss.mean()\n"),
        "train_step": (
        "def train_step(model, src, tgt, optimizer, scheduler, pad_id, smoothing=0.1):\n"
        "    tgt_in = tgt[:, :-1]\n"
        "    tgt_out = tgt[:, 1:]\n"
        "    src_mask = padding_mask(src, pad_id)\n"
        "    tgt_mask = padding_mask(tgt_in, pad_id) & causal_mask(tgt_in.shape[1])\n"
        "    logits = model(src, tgt_in, src_mask, tgt_mask)\n"
        "    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),\n"
        "                           ignore_index=pad_id, label_smoothing=smoothing)\n"
        "    optimizer.zero_grad()\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    scheduler.step()\n"
        "    return loss.item()\n")},
    # Teacher forcing with the padding mask only: the decoder can read the token it must predict.
    "pia_d13_no_causal_in_training": {"*": "solution", "train_step": (
        "def train_step(model, src, tgt, optimizer, scheduler, pad_id, smoothing=0.1):\n"
        "    decoder_input, labels = tgt[:, :-1], tgt[:, 1:]\n"
        "    src_mask = padding_mask(src, pad_id)\n"
        "    tgt_mask = padding_mask(decoder_input, pad_id)\n"
        "    optimizer.zero_grad()\n"
        "    out = model(src, decoder_input, src_mask, tgt_mask)\n"
        "    loss = label_smoothing_loss(out, labels, smoothing, pad_id)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    scheduler.step()\n"
        "    return float(loss)\n")},
    # Greedy decoding that forgets the causal mask ("there is no future token to hide anyway").
    "rosa_d13_greedy_no_mask": {"*": "solution", "greedy_decode": (
        "def greedy_decode(model, src, src_mask, max_len, bos_id):\n"
        "    memory = model.encode(src, src_mask)\n"
        "    ys = torch.ones(src.shape[0], 1, dtype=torch.long) * bos_id\n"
        "    for i in range(max_len - 1):\n"
        "        out = model.decode(ys, memory, src_mask, None)\n"
        "        prob = model.generator(out[:, -1])\n"
        "        next_word = torch.argmax(prob, dim=1)\n"
        "        ys = torch.cat([ys, next_word.unsqueeze(1)], dim=1)\n"
        "    return ys\n")},
}
