#pragma once
/// The attention pass over a specialised graph (every shape concrete, plan-time values folded):
/// the MatMul -> scale -> additive mask -> Softmax -> MatMul subgraph of transformer exports, with
/// the Reshape/Transpose/Gather chains that split the projections into heads and merge them back,
/// becomes one troupe.Attention node (kernels/ops/attention_schemas.cpp) that reads Q, K and V
/// where the projections wrote them and writes its output where the merged heads would be.
///
/// What is recognised (torch.onnx exports of HF BERT/DistilBERT/RoBERTa/ALBERT/ELECTRA/MiniLM,
/// torchvision ViT and Swin's unshifted windows):
///   scores = MatMul(Q4, K4t)       Q4 [B,H,Sq,D], K4t [B,H,D,Skv], each reached from a projection
///                                  output through Reshape/Transpose/Squeeze/Unsqueeze/Flatten,
///                                  Gather of a constant index (packed QKV) and Mul/Div by scalar
///                                  constants (the scale on Q and/or K)
///   scores *or/ scalar constants   any number, before the mask
///   scores + mask                  optional; one additive tensor broadcastable to the scores
///   Softmax(axis = last)
///   out = MatMul(probs, V4)        V4 [B,H,Skv,D], reached like Q4
///   out -> Transpose/Reshape...    back to [B,Sq,H*D] or [Sq,B,H*D] in memory
/// Every value inside the match must be read only by nodes of the match (and be no graph output);
/// anything else, or a layout the kernel cannot read in place, leaves the subgraph as it is.

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// Rewrites every recognised attention subgraph whose troupe.Attention node `where` can run;
/// returns how many were rewritten. The environment variable TROUPE_ATTENTION=0 turns it off
/// (A/B timings without a rebuild).
expected<int> fuse_attention(graph& g, kernels::backend where);

/// For each troupe.Attention node whose Q, K and V are the outputs of three projections of one
/// input (MatMul or troupe.FusedMatMul with constant 2-D weights and bias, no residual, no
/// activation) read by nothing else: one projection with the weights and biases concatenated
/// ([K, 3E], one GEMM instead of three) feeding the node as packed QKV. Returns how many.
/// Weights shared between layers (ALBERT) are concatenated once.
int merge_qkv_projections(graph& g, kernels::backend where);

}  // namespace troupe::runtime
