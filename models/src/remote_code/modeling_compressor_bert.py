# Written by `compressor export --format remote-code`: a BERT encoder whose layers have their own shapes, as the
# `compressor` key of config.json describes them (kept heads, query/key and value head widths, FFN width; a layer
# without heads or without FFN neurons keeps only that sublayer's output bias). Load it with
#   AutoModel.from_pretrained(path, trust_remote_code=True)
#   SentenceTransformer(path, trust_remote_code=True)
# It computes what the unpruned BERT computes with the removed heads and neurons set to zero, at the smaller
# model's cost. Requires torch >= 2.1 and transformers >= 4.40.
import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput


def _original_hidden(config):
    # Hidden-dimension pruning keeps `hidden.kept` of `hidden.original_size` dimensions; the attention scale stays
    # that of the original head width.
    hidden = (getattr(config, "compressor", None) or {}).get("hidden")
    return hidden["original_size"] if hidden else config.hidden_size


def _layers(config):
    ext = getattr(config, "compressor", None) or {}
    layers = ext.get("layers")
    if layers is None:
        hd = _original_hidden(config) // config.num_attention_heads
        return [
            {
                "heads": list(range(config.num_attention_heads)),
                "qk_head_dim": hd,
                "vo_head_dim": hd,
                "intermediate_size": config.intermediate_size,
            }
            for _ in range(config.num_hidden_layers)
        ]
    if len(layers) != config.num_hidden_layers:
        raise ValueError(
            f"config.compressor.layers has {len(layers)} entries, num_hidden_layers is {config.num_hidden_layers}"
        )
    return layers


def _activation(name):
    if name == "gelu":
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"hidden_act {name!r} is not supported")


class BiasOnly(nn.Module):
    """What a dropped sublayer adds to the residual stream: its output projection's bias."""

    def __init__(self, width):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(width))


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        t = input_ids.shape[1]
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            # Positions are made here, not kept in a buffer: transformers materialises a model's buffers from the
            # checkpoint or leaves them uninitialised, and classifier checkpoints carry no position_ids.
            + self.position_embeddings(torch.arange(t, device=input_ids.device).unsqueeze(0))
        )
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, h, shape):
        super().__init__()
        n = len(shape["heads"])
        self.n, self.qk, self.vo = n, shape["qk_head_dim"], shape["vo_head_dim"]
        self.query = nn.Linear(h, n * self.qk)
        self.key = nn.Linear(h, n * self.qk)
        self.value = nn.Linear(h, n * self.vo)


class Projection(nn.Module):
    def __init__(self, inp, h, eps, kept):
        super().__init__()
        self.dense = nn.Linear(inp, h) if kept else BiasOnly(h)
        self.LayerNorm = nn.LayerNorm(h, eps=eps)


class Attention(nn.Module):
    def __init__(self, config, shape):
        super().__init__()
        h = config.hidden_size
        self.kept = len(shape["heads"]) > 0
        if self.kept:
            self.self = SelfAttention(h, shape)
        vo = len(shape["heads"]) * shape["vo_head_dim"]
        self.output = Projection(vo, h, config.layer_norm_eps, self.kept)
        # Scores are scaled by the original head width, whatever width a head keeps.
        self.scale = 1.0 / math.sqrt(_original_hidden(config) // config.num_attention_heads)

    def forward(self, x, mask):
        if not self.kept:
            return self.output.LayerNorm(x + self.output.dense.bias)
        s = self.self
        b, t, _ = x.shape
        q = s.query(x).view(b, t, s.n, s.qk).transpose(1, 2)
        k = s.key(x).view(b, t, s.n, s.qk).transpose(1, 2)
        v = s.value(x).view(b, t, s.n, s.vo).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        ctx = ctx.transpose(1, 2).reshape(b, t, s.n * s.vo)
        return self.output.LayerNorm(self.output.dense(ctx) + x)


class Intermediate(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.dense = nn.Linear(h, i)


class Layer(nn.Module):
    def __init__(self, config, shape):
        super().__init__()
        h, i = config.hidden_size, shape["intermediate_size"]
        self.attention = Attention(config, shape)
        self.ffn = i > 0
        if self.ffn:
            self.intermediate = Intermediate(h, i)
        self.output = Projection(i, h, config.layer_norm_eps, self.ffn)
        self.act = _activation(config.hidden_act)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        if not self.ffn:
            return self.output.LayerNorm(a + self.output.dense.bias)
        return self.output.LayerNorm(self.output.dense(self.act(self.intermediate.dense(a))) + a)


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([Layer(config, s) for s in _layers(config)])


class Pooler(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.dense = nn.Linear(h, h)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class CompressorBertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"

    def _init_weights(self, module):
        # Every weight comes from the checkpoint; a missing pooler starts at zero rather than at random values.
        if isinstance(module, nn.Linear):
            module.weight.data.zero_()
            if module.bias is not None:
                module.bias.data.zero_()


class CompressorBertModel(CompressorBertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, mask)
        pooled = self.pooler(x)
        if return_dict is False:
            return (x, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)


class CompressorBertForSequenceClassification(CompressorBertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = CompressorBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = self.classifier(out.pooler_output)
        if return_dict is False:
            return (logits,)
        return SequenceClassifierOutput(logits=logits)
