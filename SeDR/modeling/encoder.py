"""Segment-Interaction Transformer on a stock Hugging Face encoder (SPEC §3.1-§3.3, Appendix A).

We never copy a modeling file. The stock ``RobertaModel``/``BertModel`` (no pooler) keeps its
modules and parameter names; this module

* adds two kinds of parameters to stock sub-modules, so checkpoint keys stay those of the
  original (Appendix A): ``embeddings.segment_type_embeddings`` (§3.1) and, for the
  Global-Attention variant, ``query_global``/``key_global``/``value_global`` inside each layer's
  self-attention module (§3.3);
* computes the embedding sum itself (the one step of the embeddings module that changes) with the
  stock sub-modules, in the original's summation order;
* drives the stock layers from its own loop, inserting the CLS broadcast between layers (§3.2) or
  running the global CLS attention inside a layer (§3.3), with its own non-reentrant gradient
  checkpointing (LIBRARIES §3.1). Layers may return a bare tensor (transformers 5.x) or a tuple (4.x).

Attention masks are additive ``(1 - m) · (-10000)`` as in HF 4.12 (SPEC §0); the value is also
representable in fp16/bf16, and the Global-Attention sum of two such terms (-20000) stays finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from SeDR.batch import RowGroups

# Additive attention-mask value of HF 4.12 (SPEC §0, §3.3; §10 #38 DECIDE: kept, also for attention).
ATTENTION_MASK_VALUE = -10000.0

# Interaction variants of the document encoder (SPEC §4.10).
PLAIN = "plain"            # stock layers; placeholders evolve as ordinary PAD tokens (MaxP-style, §4.4)
AFTER_LAYER = "after_layer"  # §3.2: CLS broadcast into the placeholders after every layer
GLOBAL = "global"          # §3.3: broadcast before every layer + global CLS attention
VARIANTS = (PLAIN, AFTER_LAYER, GLOBAL)

# Position-id rules (SPEC §0 / Appendix A): RoBERTa derives them from the token ids (PAD -> padding_idx),
# BERT-family encoders use absolute positions 0..T-1 per row.
ROBERTA_POSITIONS = "roberta"
ABSOLUTE_POSITIONS = "absolute"


def roberta_position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Every non-PAD token gets ``padding_idx + (non-PAD tokens up to and including it)``; PAD gets ``padding_idx``."""
    not_pad = input_ids.ne(padding_idx).long()  # (n, T)
    return torch.cumsum(not_pad, dim=1) * not_pad + padding_idx  # (n, T)


def absolute_position_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """BERT's rule: ``0..T-1`` on every row."""
    n, T = input_ids.shape
    return torch.arange(T, device=input_ids.device).expand(n, T)  # (n, T)


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """dtype the attention scores will have: the autocast dtype when autocast is on, else the weights' dtype."""
    dev = reference.device.type
    if dev in ("cuda", "cpu", "xpu") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return reference.dtype


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(1 - m) · (-10000)`` of shape ``(n, T)`` in ``dtype``."""
    return (1.0 - attention_mask.to(dtype)) * ATTENTION_MASK_VALUE  # (n, T)


def add_segment_type_embeddings(backbone: nn.Module, max_seg_num: int, init_std: float) -> nn.Embedding:
    """Register ``E_seg ∈ R^{M×H}`` as ``embeddings.segment_type_embeddings`` (SPEC §3.1), ``N(0, std²)``."""
    hidden = backbone.config.hidden_size
    table = nn.Embedding(max_seg_num, hidden)
    nn.init.normal_(table.weight, mean=0.0, std=init_std)
    backbone.embeddings.segment_type_embeddings = table
    return table


def add_global_projections(backbone: nn.Module) -> None:
    """Give every layer's self-attention ``query_global/key_global/value_global``, copied from the local ones.

    The copy is the STAR initialisation of SPEC §3.3 item 5; a checkpoint that carries its own
    ``*_global`` weights overwrites them when loaded.
    """
    for layer in backbone.encoder.layer:
        attn = layer.attention.self
        for name in ("query", "key", "value"):
            local: nn.Linear = getattr(attn, name)
            proj = nn.Linear(local.in_features, local.out_features, bias=local.bias is not None)
            with torch.no_grad():
                proj.weight.copy_(local.weight)
                if local.bias is not None:
                    proj.bias.copy_(local.bias)
            setattr(attn, f"{name}_global", proj.to(local.weight.device, local.weight.dtype))


def embed(backbone: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
          segment_types: torch.Tensor | None = None) -> torch.Tensor:
    """``LayerNorm(E_word + E_type[0] + E_pos + E_seg[segtype]) → dropout`` (SPEC §3.1), shape ``(n, T, H)``.

    The stock sub-modules are used in HF 4.12's summation order; ``E_seg`` is added to every token
    of a row (padding and placeholders included) only when ``segment_types`` is given.
    """
    emb = backbone.embeddings
    x = emb.word_embeddings(input_ids)  # (n, T, H)
    x = x + emb.token_type_embeddings(torch.zeros_like(input_ids))
    x = x + emb.position_embeddings(position_ids)
    if segment_types is not None:
        x = x + emb.segment_type_embeddings(segment_types)[:, None, :]  # (n, 1, H) broadcast over T
    return emb.dropout(emb.LayerNorm(x))


def run_layer(layer: nn.Module, hidden: torch.Tensor, mask4d: torch.Tensor | None) -> torch.Tensor:
    """One stock layer; the mask goes positionally; a tuple return (4.x) is reduced to its first element."""
    out = layer(hidden, mask4d)
    return out[0] if isinstance(out, tuple) else out


def broadcast_cls(hidden: torch.Tensor, fuse_mat: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
    """Write the sibling segments' CLS states into the last ``P`` positions, out of place (SPEC §3.2).

    ``hidden[r, T-P+j] ← cls[fuse_mat[r, j]]`` with ``cls = hidden[:, 0]`` by default; a row group
    passes the CLS states of every row of the pass instead. Gradients flow into the siblings' CLS states.
    """
    n, T, H = hidden.shape
    P = fuse_mat.shape[1]
    cls = hidden[:, 0] if cls is None else cls  # (N, H)
    gathered = cls[fuse_mat.reshape(-1)].view(n, P, H)  # (n, P, H)
    return torch.cat([hidden[:, : T - P], gathered], dim=1)  # (n, T, H)


def global_keys(states: torch.Tensor, add_mask: torch.Tensor, fuse_mat: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (or values) and their additive mask for each row's global CLS query (SPEC §3.3 item 3).

    Own row: all ``T`` positions with its own mask. Then, for each slot ``j`` in order, the sibling
    row ``fuse_mat[r, j]`` at positions ``1 … T-P-1`` (no CLS, no placeholders) with the sibling's
    own mask **plus** the own row's placeholder-mask value of slot ``j`` (0, -10000, or -20000 in total).

    Args:
        states: ``(n, T, X)`` projected keys or values.
        add_mask: ``(n, T)`` additive mask of every row.
        fuse_mat: ``(n, P)`` or ``None`` (own row only).

    Returns:
        ``(n, T + P·(T-P-1), X)`` and ``(n, T + P·(T-P-1))``; 505 + 3·501 = 2008 keys for (512, 4).
    """
    if fuse_mat is None or fuse_mat.shape[1] == 0:
        return states, add_mask
    n, T, X = states.shape
    P = fuse_mat.shape[1]
    sib_states = states[:, 1: T - P][fuse_mat]  # (n, P, T-P-1, X)
    sib_mask = add_mask[:, 1: T - P][fuse_mat] + add_mask[:, T - P:, None]  # (n, P, T-P-1)
    keys = torch.cat([states, sib_states.reshape(n, P * (T - P - 1), X)], dim=1)
    mask = torch.cat([add_mask, sib_mask.reshape(n, P * (T - P - 1))], dim=1)
    return keys, mask


def global_cls_context(attn: nn.Module, hidden: torch.Tensor, add_mask: torch.Tensor,
                       fuse_mat: torch.Tensor | None) -> torch.Tensor:
    """Global attention result for position 0 of every row, ``(n, H)`` (SPEC §3.3 item 3-4).

    Query ``Q_g(h_0)``; keys/values ``K_g/V_g`` over :func:`global_keys`; scores scaled by
    ``1/sqrt(head_dim)``, softmax, attention-probability dropout, weighted sum of ``V_g``.
    """
    n, T, H = hidden.shape
    heads = attn.num_attention_heads
    dh = attn.attention_head_size
    q = attn.query_global(hidden[:, 0]).view(n, heads, 1, dh)  # (n, h, 1, dh)
    k, mask = global_keys(attn.key_global(hidden), add_mask, fuse_mat)  # (n, K, H), (n, K)
    v, _ = global_keys(attn.value_global(hidden), add_mask, fuse_mat)  # (n, K, H)
    k = k.view(n, -1, heads, dh).transpose(1, 2)  # (n, h, K, dh)
    v = v.view(n, -1, heads, dh).transpose(1, 2)  # (n, h, K, dh)
    scores = torch.matmul(q, k.transpose(-1, -2)) / (dh ** 0.5)  # (n, h, 1, K)
    scores = scores + mask[:, None, None, :].to(scores.dtype)
    probs = F.softmax(scores, dim=-1)
    probs = attn.dropout(probs)
    ctx = torch.matmul(probs.to(v.dtype), v)  # (n, h, 1, dh)
    return ctx.reshape(n, H)  # (n, H)


def run_global_layer(layer: nn.Module, hidden: torch.Tensor, mask4d: torch.Tensor, add_mask: torch.Tensor,
                     fuse_mat: torch.Tensor | None) -> torch.Tensor:
    """A stock layer whose self-attention context at position 0 is replaced by the global result (SPEC §3.3).

    The stock local attention runs for every position (CLS included, then overwritten); the stock
    output projection / residual / LayerNorm and feed-forward follow unchanged.
    """
    attn = layer.attention.self
    local = attn(hidden, mask4d)
    local = local[0] if isinstance(local, tuple) else local  # (n, T, H)
    cls_ctx = global_cls_context(attn, hidden, add_mask, fuse_mat)  # (n, H)
    ctx = torch.cat([cls_ctx[:, None, :].to(local.dtype), local[:, 1:]], dim=1)  # (n, T, H)
    attention_output = layer.attention.output(ctx, hidden)
    return layer.feed_forward_chunk(attention_output)


def encode(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
           position_rule: str = ROBERTA_POSITIONS, padding_idx: int = 1,
           segment_types: torch.Tensor | None = None, fuse_mat: torch.Tensor | None = None,
           variant: str = PLAIN, gradient_checkpointing: bool = False,
           output_hidden_states: bool = False,
           row_groups: RowGroups | None = None) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Last hidden states ``(n, T, H)`` of the stock backbone driven layer by layer.

    With ``row_groups`` (PLAIN and AFTER_LAYER only; GLOBAL ignores them because its CLS attends
    to every column of the sibling rows, §3.3) each layer runs group by group, each group on its
    own leading columns plus the ``P`` placeholders (:func:`encode_row_groups`); the columns a
    group drops are all masked padding and come back as zeros.

    Args:
        position_rule: :data:`ROBERTA_POSITIONS` (PAD -> ``padding_idx``) or :data:`ABSOLUTE_POSITIONS`.
        segment_types: ``(n,)`` segment position ids, or ``None`` to omit ``E_seg`` (§3.1).
        fuse_mat: ``(n, P)`` batch fuse matrix (SPEC §2.3) or ``None`` (queries, ``M = 1``, MaxP-style).
        variant: :data:`PLAIN`, :data:`AFTER_LAYER` (§3.2) or :data:`GLOBAL` (§3.3).
        gradient_checkpointing: recompute each layer in backward (non-reentrant; RNG state preserved).
        output_hidden_states: also return the state after every layer step (after the §3.2 overwrite;
            for §3.3 the inputs of layers 2..N after their broadcast, then the output).
        row_groups: optional bucketing of the rows by real width (:class:`~SeDR.batch.RowGroups`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown encoder variant {variant!r}; expected one of {VARIANTS}")
    if position_rule == ROBERTA_POSITIONS:
        position_ids = roberta_position_ids(input_ids, padding_idx)
    elif position_rule == ABSOLUTE_POSITIONS:
        position_ids = absolute_position_ids(input_ids)
    else:
        raise ValueError(f"unknown position rule {position_rule!r}")
    dtype = compute_dtype(backbone.embeddings.word_embeddings.weight)
    add_mask = additive_mask(attention_mask, dtype)  # (n, T)
    use_ckpt = gradient_checkpointing and torch.is_grad_enabled()
    interact = fuse_mat is not None and fuse_mat.shape[1] > 0
    if row_groups is not None and variant != GLOBAL:
        return encode_row_groups(backbone, input_ids, position_ids, add_mask, row_groups,
                                 segment_types=segment_types, fuse_mat=fuse_mat if interact else None,
                                 variant=variant, use_ckpt=use_ckpt, output_hidden_states=output_hidden_states)
    hidden = embed(backbone, input_ids, position_ids, segment_types)  # (n, T, H)
    mask4d = add_mask[:, None, None, :]  # (n, 1, 1, T)
    states = []
    for layer in backbone.encoder.layer:
        if variant == GLOBAL:
            if interact:
                hidden = broadcast_cls(hidden, fuse_mat)  # before every layer (§3.3 item 1)
                if output_hidden_states and states:
                    states[-1] = hidden
            args = (layer, hidden, mask4d, add_mask, fuse_mat)
            fn = run_global_layer
        else:
            args = (layer, hidden, mask4d)
            fn = run_layer
        hidden = checkpoint(fn, *args, use_reentrant=False) if use_ckpt else fn(*args)
        if variant == AFTER_LAYER and interact:
            hidden = broadcast_cls(hidden, fuse_mat)  # after every layer, the last included (§3.2)
        if output_hidden_states:
            states.append(hidden)
    return (hidden, states) if output_hidden_states else hidden


def keep_columns(x: torch.Tensor, width: int, num_placeholders: int) -> torch.Tensor:
    """Columns ``[0, width)`` and the last ``P`` of ``x`` (dim 1): a row group's view of the pass."""
    T = x.shape[1]
    if width + num_placeholders >= T:
        return x
    return torch.cat([x[:, :width], x[:, T - num_placeholders:]], dim=1)


def restore_columns(x: torch.Tensor, T: int, num_placeholders: int) -> torch.Tensor:
    """Inverse of :func:`keep_columns` on ``(n_g, w + P, H)``: zeros in the dropped columns, ``(n_g, T, H)``."""
    n, W, H = x.shape
    if W == T:
        return x
    w = W - num_placeholders
    return torch.cat([x[:, :w], x.new_zeros(n, T - W, H), x[:, w:]], dim=1)  # (n_g, T, H)


def encode_row_groups(backbone: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      add_mask: torch.Tensor, row_groups: RowGroups, *, segment_types: torch.Tensor | None,
                      fuse_mat: torch.Tensor | None, variant: str, use_ckpt: bool,
                      output_hidden_states: bool) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`encode` with each layer run group by group (PLAIN, AFTER_LAYER).

    Rows interact only through the CLS broadcast between layers (§3.2), so each group can run on
    its own columns: position ids were computed on the full rows, so the kept tokens keep theirs,
    and every dropped column is masked padding of every row of the group. After each layer the
    CLS states of all rows (in group order) are gathered once and each group's placeholders are
    filled from them, exactly as :func:`broadcast_cls` does on the whole pass. Returns ``(n, T, H)``
    in batch row order with zeros in the dropped columns.
    """
    n, T = input_ids.shape
    P = row_groups.num_placeholders
    if fuse_mat is not None and fuse_mat.shape[1] != P:
        raise ValueError(f"row groups keep {P} placeholder columns, the fuse matrix has {fuse_mat.shape[1]}")
    rows = row_groups.rows.to(input_ids.device)
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(n, device=rows.device)  # batch row -> position in group order
    group_rows = rows.split(list(row_groups.sizes))
    groups = []
    for r, w in zip(group_rows, row_groups.widths):
        ids = keep_columns(input_ids[r], w, P)  # (n_g, w + P)
        pos = keep_columns(position_ids[r], w, P)  # (n_g, w + P)
        seg = None if segment_types is None else segment_types[r]  # (n_g,)
        mask4d = keep_columns(add_mask[r], w, P)[:, None, None, :]  # (n_g, 1, 1, w + P)
        fuse = None if fuse_mat is None else inverse[fuse_mat[r]]  # (n_g, P) into the group-order CLS
        groups.append((embed(backbone, ids, pos, seg), mask4d, fuse))
    hiddens = [h for h, _, _ in groups]

    def assemble(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([restore_columns(h, T, P) for h in parts])[inverse]  # (n, T, H)

    states = []
    for layer in backbone.encoder.layer:
        hiddens = [checkpoint(run_layer, layer, h, m, use_reentrant=False) if use_ckpt else run_layer(layer, h, m)
                   for h, (_, m, _) in zip(hiddens, groups)]
        if variant == AFTER_LAYER and fuse_mat is not None:
            cls = torch.cat([h[:, 0] for h in hiddens])  # (n, H) in group order
            hiddens = [broadcast_cls(h, f, cls) for h, (_, _, f) in zip(hiddens, groups)]
        if output_hidden_states:
            states.append(assemble(hiddens))
    out = assemble(hiddens)
    return (out, states) if output_hidden_states else out
