#pragma once
/// Elementwise chain fusion over a specialised graph (every shape concrete, plan-time values
/// folded; run_graph_passes runs it last, after the layout pass, so shapes are stored shapes and
/// channels-last regions keep their Add/Mul/... nodes when the layout is planned): a run of
/// unary/binary elementwise nodes (Cast to a float type first, then Add, Sub, Mul, Div with a
/// constant, Relu, Sigmoid, Tanh, Clip with constant bounds) becomes one troupe.FusedElementwise
/// node (kernels/ops/fused_elementwise_params.hpp) that reads the tensor once and writes it once.
/// Image-input normalisation (Cast -> Sub(mean) -> Mul(1/std), built by
/// runtime/input_normalization.cpp) and Add -> Relu tails are the common cases.
///
/// A chain is kept only where every intermediate has exactly one reader and is no graph output,
/// one "main" value flows through every node with the output's full shape, every other operand is
/// a constant of the chain's float type that broadcasts to it, and it has two nodes or more.

#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// Whether run_graph_passes runs the pass for `where`: on by default (the CPU and CUDA backends
/// both register troupe.FusedElementwise); the environment variable TROUPE_FUSE_ELEMENTWISE=0
/// turns it off for every backend (measurements, bisecting) and =1 on.
bool elementwise_fusion_enabled(kernels::backend where);

/// Rewrites every fusable chain whose fused kernel `where` has for the chain's input dtype;
/// returns how many chains were fused. Reads no environment.
int fuse_elementwise_chains(graph& g, kernels::backend where);

}  // namespace troupe::runtime
