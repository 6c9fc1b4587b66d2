"""Days 10-12 demo students: one typical mistake each, written the way students write."""

# Sines in the first half of the columns, cosines in the second: the picture looks plausible.
IVY_PE = '''def sinusoidal_positional_encoding(max_len, d_model):
    if d_model % 2 == 1:
        raise ValueError("d_model has to be even")
    pos = torch.arange(0, max_len).float().unsqueeze(1)
    freqs = 1.0 / (10000 ** (torch.arange(0, d_model, 2).float() / d_model))
    angles = pos * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
'''

# torch.var divides by D-1 unless told otherwise.
LEA_LAYER_NORM = '''def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True)
    x_hat = (x - mu) / torch.sqrt(var + eps)
    return gamma * x_hat + beta
'''

# The causal mask handed to the cross-attention as well: fine when S == T, a shape error otherwise.
MIA_DECODER = '''class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder's output, then feed-forward."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, src_mask=None, tgt_mask=None):
        a = self.self_attn(x, x, x, tgt_mask)[0]
        x = self.norm1(x + self.dropout(a))
        a = self.cross_attn(x, memory, memory, tgt_mask)[0]
        x = self.norm2(x + self.dropout(a))
        f = self.feed_forward(x)
        return self.norm3(x + self.dropout(f))
'''

# Embeddings and positional encoding added as they are, without the sqrt(d_model) factor.
KAI_TRANSFORMER = '''class Transformer(nn.Module):
    """The encoder-decoder Transformer of "Attention Is All You Need" (post-norm)."""

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=512, num_heads=8, num_layers=6, d_ff=2048,
                 dropout=0.1, max_len=5000):
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)
        self.register_buffer("positional_encoding", sinusoidal_positional_encoding(max_len, d_model),
                             persistent=False)
        self.encoder_layers = nn.ModuleList(
            [EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)])
        self.decoder_layers = nn.ModuleList(
            [DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)])
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        self.dropout = nn.Dropout(dropout)

    def encode(self, src, src_mask):
        h = self.src_embed(src) + self.positional_encoding[:src.shape[1]]
        h = self.dropout(h)
        for enc in self.encoder_layers:
            h = enc(h, src_mask)
        return h

    def decode(self, tgt, memory, src_mask, tgt_mask):
        h = self.tgt_embed(tgt) + self.positional_encoding[:tgt.shape[1]]
        h = self.dropout(h)
        for dec in self.decoder_layers:
            h = dec(h, memory, src_mask, tgt_mask)
        return h

    def forward(self, src, tgt, src_mask, tgt_mask):
        return self.generator(self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask))
'''

STUDENTS = {
    "ivy_d10_pe_halves": {"*": "solution", "sinusoidal_positional_encoding": IVY_PE},
    "lea_d10_unbiased_var": {"*": "solution", "layer_norm": LEA_LAYER_NORM},
    "mia_d10_cross_causal": {"*": "solution", "DecoderLayer": MIA_DECODER},
    "kai_d10_unscaled_embed": {"*": "solution", "Transformer": KAI_TRANSFORMER},
}
