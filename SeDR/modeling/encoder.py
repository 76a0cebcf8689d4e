"""Segment-Interaction Transformer on a stock Hugging Face encoder (docs/models.md#encoder-loop).

We never copy a modeling file. The stock base model of the backbone's family keeps its modules and
parameter names; a backbone adapter (:mod:`SeDR.modeling.backbones`) says how to embed, which
layers to call with which arguments and how to finish. This module adds the segment-type table
(docs/models.md#segment-type-embeddings) and the Global-Attention projections to stock sub-modules
under the original's parameter names, and drives the stock layers from one loop: the CLS broadcast
between layers (docs/models.md#cls-broadcast) or the global CLS attention inside a layer
(docs/models.md#global-attention), its own non-reentrant gradient checkpointing, and row groups
(docs/segmentation.md#row-groups). Masks are additive ``(1 - m) · (-10000)`` as in transformers 4.12.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from SeDR.core.errors import SeDRInputError
from SeDR.data.batches import RowGroups
from SeDR.modeling.backbones import (  # noqa: F401 - re-exported: the loop's public vocabulary
    ABSOLUTE_POSITIONS,
    ATTENTION_MASK_VALUE,
    ROBERTA_POSITIONS,
    Backbone,
    absolute_position_ids,
    additive_mask,
    backbone_adapter,
    compute_dtype,
    roberta_position_ids,
)

# Interaction variants of the document encoder (docs/models.md#class-summary).
PLAIN = "plain"  # stock layers; placeholders evolve as ordinary PAD tokens (MaxP-style)
AFTER_LAYER = "after_layer"  # CLS broadcast into the placeholders after every layer
GLOBAL = "global"  # broadcast before every layer + global CLS attention
VARIANTS = (PLAIN, AFTER_LAYER, GLOBAL)


def add_segment_type_embeddings(backbone: nn.Module, max_seg_num: int, init_std: float) -> nn.Embedding:
    """Register ``E_seg ∈ R^{M×E}`` as ``embeddings.segment_type_embeddings``, ``N(0, std²)``.

    ``E`` is the word-embedding width (ELECTRA, ALBERT and DeBERTa may embed narrower than their
    layers): the term joins the embedding sum before its LayerNorm and any projection.
    """
    table = nn.Embedding(max_seg_num, backbone.get_input_embeddings().embedding_dim)
    nn.init.normal_(table.weight, mean=0.0, std=init_std)
    backbone.embeddings.segment_type_embeddings = table
    return table


def add_global_projections(backbone: nn.Module) -> None:
    """Give every layer's self-attention ``query_global/key_global/value_global``, copied from the local ones.

    The copy is the STAR initialisation (docs/longformer.md#global-attention-init); a checkpoint that carries
    its own ``*_global`` weights overwrites them when loaded.
    """
    for layer in backbone_adapter(backbone).layers:
        attn = layer.attention.self
        for name in ("query", "key", "value"):
            local: nn.Linear = getattr(attn, name)
            proj = nn.Linear(local.in_features, local.out_features, bias=local.bias is not None)
            with torch.no_grad():
                proj.weight.copy_(local.weight)
                if local.bias is not None:
                    proj.bias.copy_(local.bias)
            setattr(attn, f"{name}_global", proj.to(local.weight.device, local.weight.dtype))


def run_layer(layer: nn.Module, hidden: torch.Tensor, *args) -> torch.Tensor:
    """One stock layer, its extra arguments positionally;
    a tuple return (4.x) is reduced to its first element."""
    out = layer(hidden, *args)
    return out[0] if isinstance(out, tuple) else out


def broadcast_cls(
    hidden: torch.Tensor, fuse_mat: torch.Tensor, cls: torch.Tensor | None = None
) -> torch.Tensor:
    """Write the sibling segments' CLS states into the last ``P`` positions, out of place.

    ``hidden[r, T-P+j] ← cls[fuse_mat[r, j]]`` with ``cls = hidden[:, 0]`` by default; a row group
    passes the CLS states of every row of the pass instead. Gradients flow into the siblings' CLS states.
    """
    n, T, H = hidden.shape
    P = fuse_mat.shape[1]
    cls = hidden[:, 0] if cls is None else cls  # (N, H)
    gathered = cls[fuse_mat.reshape(-1)].view(n, P, H)  # (n, P, H)
    return torch.cat([hidden[:, : T - P], gathered], dim=1)  # (n, T, H)


def global_keys(
    states: torch.Tensor, add_mask: torch.Tensor, fuse_mat: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (or values) and their additive mask for each row's global CLS query
    (docs/models.md#global-key-set).

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
    sib_states = states[:, 1 : T - P][fuse_mat]  # (n, P, T-P-1, X)
    sib_mask = add_mask[:, 1 : T - P][fuse_mat] + add_mask[:, T - P :, None]  # (n, P, T-P-1)
    keys = torch.cat([states, sib_states.reshape(n, P * (T - P - 1), X)], dim=1)
    mask = torch.cat([add_mask, sib_mask.reshape(n, P * (T - P - 1))], dim=1)
    return keys, mask


def global_cls_context(
    attn: nn.Module, hidden: torch.Tensor, add_mask: torch.Tensor, fuse_mat: torch.Tensor | None
) -> torch.Tensor:
    """Global attention result for position 0 of every row, ``(n, H)``.

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
    scores = torch.matmul(q, k.transpose(-1, -2)) / (dh**0.5)  # (n, h, 1, K)
    scores = scores + mask[:, None, None, :].to(scores.dtype)
    probs = F.softmax(scores, dim=-1)
    probs = attn.dropout(probs)
    ctx = torch.matmul(probs.to(v.dtype), v)  # (n, h, 1, dh)
    return ctx.reshape(n, H)  # (n, H)


def run_global_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    mask4d: torch.Tensor,
    add_mask: torch.Tensor,
    fuse_mat: torch.Tensor | None,
) -> torch.Tensor:
    """A stock layer whose self-attention context at position 0 is replaced by the global result.

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


def encode(
    backbone: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    position_rule: str | None = None,
    padding_idx: int | None = None,
    segment_types: torch.Tensor | None = None,
    fuse_mat: torch.Tensor | None = None,
    variant: str = PLAIN,
    gradient_checkpointing: bool = False,
    output_hidden_states: bool = False,
    row_groups: RowGroups | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Last hidden states ``(n, T, H)`` of the stock backbone driven layer by layer.

    With ``row_groups`` (PLAIN and AFTER_LAYER only; GLOBAL ignores them because its CLS attends
    to every column of the sibling rows) each layer runs group by group, each group on its
    own leading columns plus the ``P`` placeholders: position ids and column indices are taken
    on the full rows, so the kept tokens keep theirs, and every dropped column is masked padding
    of every row of the group. After each layer the CLS states of all rows (in group order) are
    gathered once and each group's placeholders are filled from them, exactly as
    :func:`broadcast_cls` does on one pass. The dropped columns come back as zeros.

    Args:
        position_rule: override of the family's rule
            (:data:`ROBERTA_POSITIONS` or :data:`ABSOLUTE_POSITIONS`).
        padding_idx: PAD id for the RoBERTa rule (default: the backbone config's ``pad_token_id``).
        segment_types: ``(n,)`` segment position ids, or ``None`` to omit ``E_seg``.
        fuse_mat: ``(n, P)`` batch fuse matrix (docs/segmentation.md#fuse-matrix)
            or ``None`` (queries, ``M = 1``, MaxP-style).
        variant: :data:`PLAIN`, :data:`AFTER_LAYER` or :data:`GLOBAL`.
        gradient_checkpointing: recompute each layer in backward (non-reentrant; RNG state preserved).
        output_hidden_states: also return the state after every layer step (after the broadcast;
            for Global-Attention the inputs of layers 2..N after their broadcast, then the output).
        row_groups: optional bucketing of the rows by real width (:class:`~SeDR.data.batches.RowGroups`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown encoder variant {variant!r}; expected one of {VARIANTS}")
    adapter = backbone_adapter(backbone)
    if position_rule is None:
        position_ids = adapter.position_ids(input_ids, padding_idx)
    elif position_rule == ROBERTA_POSITIONS:
        position_ids = roberta_position_ids(
            input_ids, backbone.config.pad_token_id if padding_idx is None else padding_idx
        )
    elif position_rule == ABSOLUTE_POSITIONS:
        position_ids = absolute_position_ids(input_ids)
    else:
        raise ValueError(f"unknown position rule {position_rule!r}")
    check_positions(adapter, position_ids)
    n, T = input_ids.shape
    use_ckpt = gradient_checkpointing and torch.is_grad_enabled()
    interact = fuse_mat is not None and fuse_mat.shape[1] > 0
    inverse, groups = split_rows(
        input_ids,
        position_ids,
        attention_mask,
        segment_types,
        fuse_mat if interact else None,
        None if variant == GLOBAL else row_groups,
    )
    P = row_groups.num_placeholders if inverse is not None else 0
    hiddens = [adapter.embed(ids, pos, mask, seg) for ids, pos, mask, _, seg, _ in groups]  # (n_g, w_g, H)
    args = [adapter.layer_args(h, mask, pos, cols) for h, (_, pos, mask, cols, _, _) in zip(hiddens, groups)]

    def assemble(parts: list[torch.Tensor]) -> torch.Tensor:
        if inverse is None:
            return parts[0]
        return torch.cat([restore_columns(h, T, P) for h in parts])[inverse]  # (n, T, H)

    states = []
    for i, layer in enumerate(adapter.layers):
        if variant == GLOBAL:
            if interact:
                hiddens = [broadcast_cls(hiddens[0], fuse_mat)]  # before every layer
                if output_hidden_states and states:
                    states[-1] = hiddens[0]
            mask4d = args[0][i][0]
            calls = [(run_global_layer, (layer, hiddens[0], mask4d, mask4d[:, 0, 0], fuse_mat))]
        else:
            calls = [(run_layer, (layer, h, *a[i])) for h, a in zip(hiddens, args)]
        hiddens = [checkpoint(fn, *xs, use_reentrant=False) if use_ckpt else fn(*xs) for fn, xs in calls]
        if variant == AFTER_LAYER and interact:  # after every layer, the last included
            cls = hiddens[0][:, 0] if len(hiddens) == 1 else torch.cat([h[:, 0] for h in hiddens])  # (n, H)
            hiddens = [broadcast_cls(h, g[5], cls) for h, g in zip(hiddens, groups)]
        if output_hidden_states:
            states.append(assemble(hiddens))
    out = assemble([adapter.finish(h) for h in hiddens])
    return (out, states) if output_hidden_states else out


def check_positions(adapter: Backbone, position_ids: torch.Tensor) -> None:
    """Stop with a clear error before a position id runs past the family's absolute position table."""
    table = adapter.position_table(adapter.module.config)
    if table is None or table[0] + position_ids.shape[1] <= table[1]:
        return
    top = int(position_ids.max())
    if top >= table[1]:
        raise SeDRInputError(
            f"rows need position id {top} but the {adapter.module.config.model_type} position table "
            f"has {table[1]} rows; lower --max_seg_length (or --max_query_length)"
        )


def split_rows(input_ids, position_ids, attention_mask, segment_types, fuse_mat, row_groups):
    """The passes of one encoder call: ``(inverse, [(ids, positions, mask, columns, segment types, fuse)])``.

    Without row groups one pass over the batch as given (``inverse`` is ``None``). With them, one
    pass per group on its kept columns (:func:`keep_columns`), ``fuse`` pointing into the CLS states
    of all rows in group order, and ``inverse`` the batch row -> group-order position map.
    """
    n, T = input_ids.shape
    columns = torch.arange(T, device=input_ids.device)[None]  # (1, T): column index on the full row
    if row_groups is None:
        return None, [(input_ids, position_ids, attention_mask, columns, segment_types, fuse_mat)]
    P = row_groups.num_placeholders
    if fuse_mat is not None and fuse_mat.shape[1] != P:
        raise ValueError(f"row groups keep {P} placeholder columns, the fuse matrix has {fuse_mat.shape[1]}")
    rows = row_groups.rows.to(input_ids.device)
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(n, device=rows.device)  # batch row -> position in group order
    groups = []
    for r, w in zip(rows.split(list(row_groups.sizes)), row_groups.widths):
        ids, pos, mask = (
            keep_columns(x[r], w, P) for x in (input_ids, position_ids, attention_mask)
        )  # (n_g, w + P)
        groups.append(
            (
                ids,
                pos,
                mask,
                keep_columns(columns, w, P),
                None if segment_types is None else segment_types[r],
                None if fuse_mat is None else inverse[fuse_mat[r]],
            )
        )
    return inverse, groups


def keep_columns(x: torch.Tensor, width: int, num_placeholders: int) -> torch.Tensor:
    """Columns ``[0, width)`` and the last ``P`` of ``x`` (dim 1): a row group's view of the pass."""
    T = x.shape[1]
    if width + num_placeholders >= T:
        return x
    return torch.cat([x[:, :width], x[:, T - num_placeholders :]], dim=1)


def restore_columns(x: torch.Tensor, T: int, num_placeholders: int) -> torch.Tensor:
    """Inverse of :func:`keep_columns` on ``(n_g, w + P, H)``:
    zeros in the dropped columns, ``(n_g, T, H)``."""
    n, W, H = x.shape
    if W == T:
        return x
    w = W - num_placeholders
    return torch.cat([x[:, :w], x.new_zeros(n, T - W, H), x[:, w:]], dim=1)  # (n_g, T, H)
