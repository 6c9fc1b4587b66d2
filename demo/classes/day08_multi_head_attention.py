"""Days 8-9 demo students: one typical mistake each, written the way students write it."""

# Splits and merges the heads with a bare view: right shapes, wrong numbers. Her
# forward calls split_heads/merge_heads, so the grader's reference versions stand
# in for them there and she loses points on split_heads and merge_heads only.
IVY_SPLIT = '''def split_heads(x, num_heads):
    B, L, D = x.shape
    return x.view(B, num_heads, L, D // num_heads)
'''
IVY_MERGE = '''def merge_heads(x):
    B, h, L, d_k = x.shape
    return x.contiguous().view(B, L, h * d_k)
'''

# The __init__ the notebook gives every student; the students below write only forward.
GIVEN_INIT = '''class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al., 2017, section 3.2.2)."""

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, d_model, bias=bias)
        self.W_v = nn.Linear(d_model, d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
'''

# Passes the mask straight through: fine for a causal (L, L) mask, wrong for (B, Lq, Lk).
JAY_FORWARD = GIVEN_INIT + '''
    def forward(self, query, key, value, mask=None):
        Q = split_heads(self.W_q(query), self.num_heads)
        K = split_heads(self.W_k(key), self.num_heads)
        V = split_heads(self.W_v(value), self.num_heads)
        _, attn = scaled_dot_product_attention(Q, K, V, mask=mask)
        out = torch.matmul(self.dropout(attn), V)
        return self.W_o(merge_heads(out)), attn
'''

# Writes the attention inline and scales by the model width instead of the head width.
KIM_FORWARD = GIVEN_INIT + '''
    def forward(self, query, key, value, mask=None):
        batch = query.size(0)
        q = self.W_q(query).view(batch, -1, self.num_heads, self.d_k).transpose(1, 2)
        k = self.W_k(key).view(batch, -1, self.num_heads, self.d_k).transpose(1, 2)
        v = self.W_v(value).view(batch, -1, self.num_heads, self.d_k).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)
        if mask is not None:
            if mask.dim() == 3:
                mask = mask.unsqueeze(1)
            scores = scores.masked_fill(mask == 0, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        if mask is not None:
            attn = torch.nan_to_num(attn)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(batch, -1, self.d_model)
        return self.W_o(out), attn
'''

STUDENTS = {
    "ivy_d08_view_no_transpose": {"*": "solution", "split_heads": IVY_SPLIT, "merge_heads": IVY_MERGE},
    "jay_d08_mask_no_head_axis": {"*": "solution", "MultiHeadAttention": JAY_FORWARD},
    "kim_d08_sqrt_d_model": {"*": "solution", "MultiHeadAttention": KIM_FORWARD},
    "lou_d08_forgot_biases": {"*": "solution", "mha_parameter_count": (
        "def mha_parameter_count(d_model, num_heads, bias=True):\n"
        "    d_k = d_model // num_heads\n"
        "    # each head has its own W_q, W_k, W_v slices, plus the output projection\n"
        "    return num_heads * 3 * d_model * d_k + d_model * d_model\n")},
}
