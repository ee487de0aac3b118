"""The table of single-op cases the parity harness runs: op, inputs, attributes, opset.

An input is one of
  R(*shape, kind=..., dtype=...)   a graph input, fresh random values each run
  W(*shape, kind=..., dtype=...)   an initializer with fresh random values (weights: pre-packing path)
  V(value, dtype)                  an initializer with a fixed value (shapes, axes, pads, scales...)
  NONE                             an absent optional input
Kinds: normal N(0,1); wide N(0,100); pos U(0.5,2); nonzero +-U(0.5,2); unit U(-1,1); grid multiples of 1/4 in
[-10, 10) (exact in fp16, so comparisons, casts and fmod cannot flip under rounding); int
integers in [-10, 10); nzint the same without 0; idx:N indices in [-N, N); bool; nan normal with NaNs.
"""
import numpy as np
from onnx import TensorProto

F32, I64, I32, BOOL = np.float32, np.int64, np.int32, np.bool_


class inp:
    def __init__(self, shape=(), kind="normal", dtype=F32, const=False, value=None):
        self.shape = tuple(shape)
        self.kind = kind
        self.dtype = np.dtype(dtype)
        self.const = const
        self.value = value

    def make(self, rng):
        if self.value is not None:
            return self.value
        s, k = self.shape, self.kind
        if k == "normal":
            a = rng.standard_normal(s)
        elif k == "wide":
            a = rng.standard_normal(s) * 10.0
        elif k == "pos":
            a = rng.uniform(0.5, 2.0, s)
        elif k == "nonzero":
            a = rng.uniform(0.5, 2.0, s) * rng.choice([-1.0, 1.0], s)
        elif k == "unit":
            a = rng.uniform(-1.0, 1.0, s)
        elif k == "grid":
            a = rng.integers(-40, 40, s) / 4.0
        elif k == "int":
            a = rng.integers(-10, 10, s)
        elif k == "nzint":
            a = rng.integers(1, 10, s) * rng.choice([-1, 1], s)
        elif k.startswith("idx:"):
            n = int(k[4:])
            a = rng.integers(-n, n, s)
        elif k == "bool":
            a = rng.random(s) < 0.5
        elif k == "nan":
            a = rng.standard_normal(s)
            a[rng.random(s) < 0.25] = np.nan
        else:
            raise ValueError(k)
        return np.asarray(a).astype(self.dtype)


def R(*shape, kind="normal", dtype=F32):
    return inp(shape, kind, dtype)


def W(*shape, kind="normal", dtype=F32):
    return inp(shape, kind, dtype, const=True)


def V(value, dtype=I64):
    return inp(const=True, value=np.array(value, dtype=dtype))


NONE = None


class case:
    def __init__(self, name, op, inputs, opset=17, n_out=1, **attrs):
        self.name = name
        self.op = op
        self.inputs = inputs
        self.opset = opset
        self.n_out = n_out
        self.attrs = attrs

    def __repr__(self):
        return self.name


def _cases():
    c = []
    add = c.append

    # ---- elementwise arithmetic, with broadcasting -------------------------------------------
    for op in ("Add", "Sub", "Mul"):
        add(case(f"{op}_same", op, [R(2, 3, 4), R(2, 3, 4)]))
        add(case(f"{op}_bcast_last", op, [R(2, 3, 4), R(4)]))
        add(case(f"{op}_bcast_both", op, [R(2, 1, 4), R(3, 1)]))
        add(case(f"{op}_scalar_const", op, [R(2, 3), V(1.5, F32)]))
        add(case(f"{op}_const_first", op, [W(1, 3, 1), R(2, 3, 5)]))
        add(case(f"{op}_int64", op, [R(2, 3, kind="int", dtype=I64), R(3, kind="int", dtype=I64)]))
        add(case(f"{op}_int32", op, [R(4, 2, kind="int", dtype=I32), R(4, 1, kind="int", dtype=I32)]))
    add(case("Add_big_bcast", "Add", [R(2, 8, 16, 16), W(8, 1, 1)]))
    add(case("Add_opset7", "Add", [R(2, 3, 4), R(4)], opset=7))
    add(case("Div_same", "Div", [R(2, 3, 4), R(2, 3, 4, kind="nonzero")]))
    add(case("Div_bcast", "Div", [R(2, 3, 4), R(3, 1, kind="nonzero")]))
    add(case("Div_scalar", "Div", [R(2, 3, 4), V(8.0, F32)]))
    add(case("Div_int64", "Div", [R(3, 4, kind="int", dtype=I64), R(4, kind="nzint", dtype=I64)]))
    add(case("Pow_tensor", "Pow", [R(2, 3, 4, kind="pos"), R(2, 3, 4, kind="unit")]))
    add(case("Pow_square", "Pow", [R(2, 3, 4), V(2.0, F32)]))
    add(case("Pow_bcast", "Pow", [R(3, 4, kind="pos"), R(4, kind="unit")]))
    add(case("Pow_int_exponent", "Pow", [R(3, 4), V(3, I64)], opset=13))
    for op, kind in (("Sqrt", "pos"), ("Exp", "normal"), ("Log", "pos"), ("Neg", "normal"),
                     ("Abs", "normal"), ("Erf", "normal"), ("Tanh", "normal"), ("Sigmoid", "normal"),
                     ("Relu", "normal")):
        add(case(op, op, [R(2, 3, 4, 5, kind=kind)]))
    add(case("Neg_int64", "Neg", [R(3, 4, kind="int", dtype=I64)]))
    add(case("Abs_int64", "Abs", [R(3, 4, kind="int", dtype=I64)]))
    add(case("Relu_opset13", "Relu", [R(7, 9)], opset=13))
    add(case("Sigmoid_opset7", "Sigmoid", [R(7, 9)], opset=7))
    add(case("LeakyRelu", "LeakyRelu", [R(2, 3, 4)], alpha=0.1))
    add(case("LeakyRelu_default", "LeakyRelu", [R(2, 3, 4)]))
    add(case("HardSigmoid", "HardSigmoid", [R(2, 3, 4)], alpha=0.3, beta=0.4))
    add(case("HardSigmoid_default", "HardSigmoid", [R(2, 3, 4)]))
    add(case("HardSwish", "HardSwish", [R(2, 3, 4, 5)]))
    # Clip: min/max attributes before opset 11, optional inputs after
    add(case("Clip_attrs_opset7", "Clip", [R(3, 4)], opset=7, min=-0.5, max=0.7))
    add(case("Clip_attr_default_opset7", "Clip", [R(3, 4)], opset=7))
    add(case("Clip_inputs", "Clip", [R(3, 4), V(-0.5, F32), V(0.7, F32)]))
    add(case("Clip_min_only", "Clip", [R(3, 4), V(0.0, F32)]))
    add(case("Clip_max_only", "Clip", [R(3, 4), NONE, V(6.0, F32)]))
    add(case("Clip_none", "Clip", [R(3, 4)]))
    add(case("Clip_int64", "Clip", [R(3, 4, kind="int", dtype=I64), V(-3, I64), V(5, I64)], opset=13))
    add(case("Mod_int64", "Mod", [R(3, 4, kind="int", dtype=I64), R(4, kind="nzint", dtype=I64)]))
    add(case("Mod_int64_fmod", "Mod", [R(3, 4, kind="int", dtype=I64), R(4, kind="nzint", dtype=I64)], fmod=1))
    add(case("Mod_float_fmod", "Mod", [R(3, 4, kind="grid"), V([1.5, -2.25, 0.75, 3.0], F32)], fmod=1))

    # ---- softmax and normalisations ----------------------------------------------------------
    for op in ("Softmax", "LogSoftmax"):
        add(case(f"{op}_last", op, [R(2, 3, 17)], axis=-1))
        add(case(f"{op}_axis1", op, [R(2, 5, 4)], axis=1))
        add(case(f"{op}_default", op, [R(2, 3, 4, 5)]))
        # before opset 13 the input is coerced to 2-D at `axis` (default 1)
        add(case(f"{op}_opset11_default", op, [R(2, 3, 4)], opset=11))
        add(case(f"{op}_opset11_axis2", op, [R(2, 3, 4, 5)], opset=11, axis=2))
    add(case("Softmax_wide_logits", "Softmax", [R(2, 64, kind="wide")], axis=-1))
    add(case("LayerNorm_last", "LayerNormalization", [R(2, 5, 16), W(16), W(16)], axis=-1, epsilon=1e-5))
    add(case("LayerNorm_two_axes", "LayerNormalization", [R(2, 3, 4, 6), W(4, 6), W(4, 6)], axis=-2))
    add(case("LayerNorm_no_bias", "LayerNormalization", [R(3, 32), W(32)], epsilon=1e-12))
    add(case("LayerNorm_runtime_scale", "LayerNormalization", [R(2, 7, 8), R(8), R(8)]))
    for opset in (7, 9, 15):
        add(case(f"BatchNorm_opset{opset}", "BatchNormalization",
                 [R(2, 3, 4, 5), W(3), W(3), W(3), W(3, kind="pos")], opset=opset, epsilon=1e-3))
    add(case("BatchNorm_2d", "BatchNormalization", [R(4, 6), W(6), W(6), W(6), W(6, kind="pos")]))
    add(case("BatchNorm_3d", "BatchNormalization", [R(2, 4, 7), W(4), W(4), W(4), W(4, kind="pos")]))

    # ---- convolution, matmul ----------------------------------------------------------------
    add(case("Conv_3x3_pad", "Conv", [R(2, 3, 8, 8), W(4, 3, 3, 3), W(4)], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    add(case("Conv_stride2", "Conv", [R(1, 4, 9, 9), W(8, 4, 3, 3)], strides=[2, 2], pads=[1, 1, 1, 1]))
    add(case("Conv_dilation", "Conv", [R(1, 2, 10, 10), W(3, 2, 3, 3), W(3)], dilations=[2, 2], pads=[2, 2, 2, 2]))
    add(case("Conv_groups", "Conv", [R(2, 4, 6, 6), W(6, 2, 3, 3), W(6)], group=2, pads=[1, 1, 1, 1]))
    add(case("Conv_depthwise", "Conv", [R(1, 8, 7, 7), W(8, 1, 3, 3), W(8)], group=8, pads=[1, 1, 1, 1]))
    add(case("Conv_depthwise_s2_k5", "Conv", [R(1, 6, 11, 11), W(6, 1, 5, 5)], group=6, strides=[2, 2],
             pads=[2, 2, 2, 2]))
    add(case("Conv_1x1", "Conv", [R(2, 16, 5, 5), W(8, 16, 1, 1), W(8)]))
    add(case("Conv_same_upper", "Conv", [R(1, 3, 7, 7), W(4, 3, 4, 4)], auto_pad="SAME_UPPER", strides=[2, 2]))
    add(case("Conv_asym_pads", "Conv", [R(1, 3, 6, 7), W(2, 3, 3, 2)], pads=[0, 1, 2, 0]))
    add(case("Conv_1d", "Conv", [R(2, 4, 20), W(6, 4, 5), W(6)], pads=[2, 2], strides=[2]))
    add(case("Conv_runtime_weight", "Conv", [R(1, 3, 6, 6), R(5, 3, 3, 3), R(5)]))
    add(case("Conv_7x7_s2_stem", "Conv", [R(1, 3, 32, 32), W(8, 3, 7, 7)], strides=[2, 2], pads=[3, 3, 3, 3]))
    add(case("Conv_opset7", "Conv", [R(1, 3, 6, 6), W(4, 3, 3, 3), W(4)], opset=7, pads=[1, 1, 1, 1]))
    add(case("ConvTranspose_s2_k4", "ConvTranspose", [R(1, 4, 5, 5), W(4, 3, 4, 4), W(3)], strides=[2, 2],
             pads=[1, 1, 1, 1]))
    add(case("ConvTranspose_k3", "ConvTranspose", [R(2, 3, 4, 4), W(3, 2, 3, 3)]))
    add(case("ConvTranspose_output_padding", "ConvTranspose", [R(1, 2, 4, 4), W(2, 3, 3, 3)], strides=[2, 2],
             pads=[1, 1, 1, 1], output_padding=[1, 1]))
    add(case("ConvTranspose_group", "ConvTranspose", [R(1, 4, 3, 3), W(4, 1, 2, 2), W(4)], group=4, strides=[2, 2]))
    add(case("ConvTranspose_1d", "ConvTranspose", [R(1, 3, 7), W(3, 2, 4)], strides=[2], pads=[1, 1]))
    add(case("MatMul_2d", "MatMul", [R(5, 7), R(7, 3)]))
    add(case("MatMul_3d_2d_weight", "MatMul", [R(2, 5, 16), W(16, 8)]))
    add(case("MatMul_4d_attention", "MatMul", [R(2, 4, 6, 8), R(2, 4, 8, 6)]))
    add(case("MatMul_bcast_batch", "MatMul", [R(2, 1, 3, 4), R(3, 4, 5)]))
    add(case("MatMul_vec_mat", "MatMul", [R(4), R(2, 4, 3)]))
    add(case("MatMul_mat_vec", "MatMul", [R(2, 3, 4), R(4)]))
    add(case("MatMul_larger", "MatMul", [R(1, 64, 96), W(96, 80)]))
    add(case("MatMul_opset9", "MatMul", [R(3, 4), R(4, 5)], opset=9))
    add(case("Gemm_transB_bias", "Gemm", [R(4, 8), W(6, 8), W(6)], transB=1))
    add(case("Gemm_plain", "Gemm", [R(3, 5), W(5, 4), W(3, 4)]))
    add(case("Gemm_transA_alpha_beta", "Gemm", [R(5, 3), R(5, 4), R(1, 4)], transA=1, alpha=0.5, beta=2.0))
    add(case("Gemm_scalar_c", "Gemm", [R(2, 3), R(3, 4), V(0.25, F32)]))
    add(case("Gemm_no_c", "Gemm", [R(2, 3), R(4, 3)], transB=1))
    add(case("Gemm_opset7", "Gemm", [R(2, 3), W(4, 3), W(4)], opset=7, transB=1))
    add(case("Gemm_opset9_col_c", "Gemm", [R(3, 6), W(6, 2), W(3, 1)], opset=9))

    # ---- pooling --------------------------------------------------------------------------------
    add(case("MaxPool_2x2", "MaxPool", [R(2, 3, 8, 8)], kernel_shape=[2, 2], strides=[2, 2]))
    add(case("MaxPool_3x3_s2_p1", "MaxPool", [R(1, 4, 9, 9)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    add(case("MaxPool_ceil", "MaxPool", [R(1, 2, 7, 7)], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))
    add(case("MaxPool_dilation", "MaxPool", [R(1, 2, 8, 8)], kernel_shape=[2, 2], dilations=[2, 2]))
    add(case("MaxPool_1d", "MaxPool", [R(2, 3, 11)], kernel_shape=[3], strides=[2]))
    add(case("MaxPool_same_upper", "MaxPool", [R(1, 2, 5, 5)], kernel_shape=[3, 3], strides=[2, 2],
             auto_pad="SAME_UPPER"))
    add(case("MaxPool_opset7", "MaxPool", [R(1, 2, 6, 6)], opset=7, kernel_shape=[2, 2], strides=[2, 2]))
    add(case("AveragePool_2x2", "AveragePool", [R(2, 3, 8, 8)], kernel_shape=[2, 2], strides=[2, 2]))
    add(case("AveragePool_pad_exclude", "AveragePool", [R(1, 2, 6, 6)], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    add(case("AveragePool_pad_include", "AveragePool", [R(1, 2, 6, 6)], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
             count_include_pad=1))
    add(case("AveragePool_ceil", "AveragePool", [R(1, 2, 7, 7)], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    add(case("AveragePool_1d", "AveragePool", [R(2, 3, 10)], kernel_shape=[2], strides=[2]))
    add(case("AveragePool_opset7", "AveragePool", [R(1, 2, 6, 6)], opset=7, kernel_shape=[2, 2], strides=[2, 2]))
    add(case("GlobalAveragePool_4d", "GlobalAveragePool", [R(2, 5, 7, 6)]))
    add(case("GlobalAveragePool_3d", "GlobalAveragePool", [R(2, 5, 9)]))

    # ---- reductions: axes as attribute before opset 18 (ReduceSum: 13), as input after; a
    # reduction to one value takes positive inputs, so that fp16 rounding meets no cancellation -----
    add(case("ReduceMean_last_keep", "ReduceMean", [R(2, 3, 8)], axes=[-1]))
    add(case("ReduceMean_two_axes", "ReduceMean", [R(2, 3, 4, 5)], axes=[2, 3], keepdims=0))
    add(case("ReduceMean_all", "ReduceMean", [R(3, 4, kind="pos")], keepdims=0))
    add(case("ReduceMean_opset11", "ReduceMean", [R(3, 4, 5)], opset=11, axes=[1]))
    add(case("ReduceMean_opset18_input", "ReduceMean", [R(2, 3, 4), V([-1, 0])], opset=18))
    add(case("ReduceMean_opset18_none", "ReduceMean", [R(2, 3, 4, kind="pos")], opset=18, keepdims=0))
    add(case("ReduceSum_opset11_attr", "ReduceSum", [R(2, 3, 4)], opset=11, axes=[1], keepdims=0))
    add(case("ReduceSum_opset13_input", "ReduceSum", [R(2, 3, 4), V([0, 2])], opset=13))
    add(case("ReduceSum_opset13_all", "ReduceSum", [R(2, 3, 4, kind="pos")], opset=13, keepdims=0))
    add(case("ReduceSum_noop_empty", "ReduceSum", [R(2, 3), V([], I64)], opset=13, noop_with_empty_axes=1))
    add(case("ReduceSum_int64", "ReduceSum", [R(3, 5, kind="int", dtype=I64), V([1])], opset=13))
    add(case("ReduceMax_opset13", "ReduceMax", [R(2, 3, 4)], opset=13, axes=[-1]))
    add(case("ReduceMax_opset18_input", "ReduceMax", [R(2, 3, 4), V([1])], opset=18, keepdims=0))
    add(case("ReduceMax_all", "ReduceMax", [R(3, 4)], keepdims=1))
    add(case("ReduceMax_int64", "ReduceMax", [R(3, 4, kind="int", dtype=I64)], axes=[0]))

    # ---- shape and data movement ---------------------------------------------------------------
    add(case("Reshape_minus1_zero", "Reshape", [R(2, 3, 4), V([0, -1])]))
    add(case("Reshape_split_heads", "Reshape", [R(2, 5, 12), V([2, 5, 3, 4])]))
    add(case("Reshape_int64", "Reshape", [R(6, kind="int", dtype=I64), V([2, 3])]))
    add(case("Reshape_opset13", "Reshape", [R(4, 6), V([-1, 2, 3])], opset=13))
    for axis in (0, 1, 2, -1):
        add(case(f"Flatten_axis{axis}", "Flatten", [R(2, 3, 4, 5)], axis=axis))
    add(case("Flatten_default", "Flatten", [R(2, 3, 4)]))
    add(case("Transpose_heads", "Transpose", [R(2, 3, 4, 5)], perm=[0, 2, 1, 3]))
    add(case("Transpose_kt", "Transpose", [R(2, 3, 4, 5)], perm=[0, 2, 3, 1]))
    add(case("Transpose_default", "Transpose", [R(2, 3, 4)]))
    add(case("Transpose_int64", "Transpose", [R(3, 4, kind="int", dtype=I64)], perm=[1, 0]))
    add(case("Squeeze_opset11_attr", "Squeeze", [R(1, 3, 1, 4)], opset=11, axes=[0, 2]))
    add(case("Squeeze_opset13_input", "Squeeze", [R(2, 1, 4), V([-2])], opset=13))
    add(case("Squeeze_all_ones", "Squeeze", [R(1, 3, 1, 4)], opset=13))
    add(case("Squeeze_opset7", "Squeeze", [R(3, 1)], opset=7, axes=[1]))
    add(case("Unsqueeze_opset11_attr", "Unsqueeze", [R(3, 4)], opset=11, axes=[0, 3]))
    add(case("Unsqueeze_opset13_input", "Unsqueeze", [R(3, 4), V([-1])], opset=13))
    add(case("Unsqueeze_unsorted", "Unsqueeze", [R(3, 4), V([2, 0])], opset=13))
    add(case("Unsqueeze_int64_scalar", "Unsqueeze", [R(kind="int", dtype=I64), V([0])], opset=13))
    add(case("Concat_axis1", "Concat", [R(2, 3, 4), R(2, 5, 4)], axis=1))
    add(case("Concat_last_three", "Concat", [R(2, 3), R(2, 1), W(2, 4)], axis=-1))
    add(case("Concat_axis0_int64", "Concat", [R(1, kind="int", dtype=I64), V([5, -1]), R(2, kind="int", dtype=I64)],
             axis=0))
    add(case("Concat_opset7", "Concat", [R(2, 2), R(2, 2)], opset=7, axis=0))
    add(case("Split_opset11_attr", "Split", [R(2, 7)], opset=11, n_out=2, axis=1, split=[3, 4]))
    add(case("Split_opset13_input", "Split", [R(6, 3), V([1, 5])], opset=13, n_out=2, axis=0))
    add(case("Split_equal", "Split", [R(2, 9)], n_out=3, axis=-1))
    add(case("Split_opset18_uneven", "Split", [R(5, 2)], opset=18, n_out=3, axis=0, num_outputs=3))
    add(case("Split_opset7", "Split", [R(4, 6)], opset=7, n_out=2, axis=1))
    add(case("Slice_opset9_attrs", "Slice", [R(4, 6)], opset=9, starts=[1, 0], ends=[3, 4], axes=[0, 1]))
    add(case("Slice_opset9_no_axes", "Slice", [R(4, 6)], opset=9, starts=[1], ends=[1000]))
    add(case("Slice_basic", "Slice", [R(4, 6, 5), V([1, 2]), V([3, 5]), V([0, 2])]))
    add(case("Slice_negative", "Slice", [R(4, 6), V([-3]), V([-1]), V([1])]))
    add(case("Slice_step2", "Slice", [R(4, 9), V([1]), V([9]), V([1]), V([2])]))
    add(case("Slice_reverse", "Slice", [R(5, 4), V([-1]), V([-(2**63)]), V([0]), V([-1])]))
    add(case("Slice_clamp_int_max", "Slice", [R(3, 7), V([2]), V([2**63 - 1]), V([-1])]))
    add(case("Slice_no_axes", "Slice", [R(4, 5), V([1, 1]), V([3, 4])]))
    add(case("Slice_int64_shape", "Slice", [R(4, kind="int", dtype=I64), V([0]), V([2]), V([0])]))
    add(case("Slice_opset10", "Slice", [R(5, 6), V([1]), V([-1]), V([1]), V([2])], opset=10))
    add(case("Gather_axis0_2d_idx", "Gather", [R(5, 4), R(2, 3, kind="idx:5", dtype=I64)], axis=0))
    add(case("Gather_axis1", "Gather", [R(3, 6, 2), R(4, kind="idx:6", dtype=I64)], axis=1))
    add(case("Gather_scalar_index", "Gather", [R(3, 6), V(-2)], axis=1))
    add(case("Gather_int64_shape", "Gather", [R(4, kind="int", dtype=I64), V(1)], axis=0))
    add(case("Gather_embedding", "Gather", [W(50, 8), R(2, 7, kind="idx:50", dtype=I64)]))
    add(case("Gather_int32_idx", "Gather", [R(6, 3), R(4, kind="idx:6", dtype=I32)]))
    add(case("GatherElements_axis0", "GatherElements", [R(3, 4), R(2, 4, kind="idx:3", dtype=I64)], axis=0))
    add(case("GatherElements_last", "GatherElements", [R(2, 3, 5), R(2, 3, 2, kind="idx:5", dtype=I64)], axis=-1))
    add(case("Expand_bcast", "Expand", [R(3, 1), V([2, 3, 4])]))
    add(case("Expand_lower_rank_shape", "Expand", [R(2, 1, 4), V([3, 1])]))
    add(case("Expand_int64", "Expand", [R(1, 3, kind="int", dtype=I64), V([4, 3])]))
    add(case("Expand_bool", "Expand", [R(1, 5, kind="bool", dtype=BOOL), V([2, 1])]))
    add(case("Tile", "Tile", [R(2, 3, 2), V([2, 1, 3])]))
    add(case("Tile_int64", "Tile", [R(3, kind="int", dtype=I64), V([4])]))
    add(case("Pad_constant", "Pad", [R(2, 3, 4), V([0, 1, 2, 0, 2, 1]), V(0.5, F32)], mode="constant"))
    add(case("Pad_zero_default", "Pad", [R(1, 2, 3, 3), V([0, 0, 1, 1, 0, 0, 1, 1])]))
    add(case("Pad_reflect", "Pad", [R(1, 2, 4, 5), V([0, 0, 2, 1, 0, 0, 1, 2])], mode="reflect"))
    add(case("Pad_edge", "Pad", [R(2, 5), V([1, 2, 2, 1])], mode="edge"))
    add(case("Pad_negative_crop", "Pad", [R(4, 6), V([-1, 1, 0, -2])]))
    add(case("Pad_opset7_attr", "Pad", [R(2, 3)], opset=7, pads=[1, 0, 0, 2], value=-1.0))
    add(case("Pad_opset18_axes", "Pad", [R(2, 3, 4), V([1, 2, 0, 1]), V(0.0, F32), V([0, 2])], opset=18))
    add(case("Pad_int64", "Pad", [R(3, kind="int", dtype=I64), V([1, 2]), V(7, I64)], opset=13))
    add(case("Shape", "Shape", [R(2, 3, 4)]))
    add(case("Shape_int64_input", "Shape", [R(5, kind="int", dtype=I64)]))
    add(case("Shape_opset15_start_end", "Shape", [R(2, 3, 4, 5)], opset=15, start=1, end=-1))
    add(case("ConstantOfShape_float", "ConstantOfShape", [V([2, 3])],
             value=np.array([0.5], np.float32)))
    add(case("ConstantOfShape_int64", "ConstantOfShape", [V([4])], value=np.array([7], np.int64)))
    add(case("ConstantOfShape_default", "ConstantOfShape", [V([2, 2])]))
    add(case("Range_float", "Range", [V(0.0, F32), V(5.0, F32), V(0.5, F32)]))
    add(case("Range_int64_down", "Range", [V(10), V(0), V(-3)]))
    add(case("Range_int64_empty", "Range", [V(3), V(3), V(1)]))
    for name, src, to, kind in (("f32_i64", F32, TensorProto.INT64, "grid"),
                                ("i64_f32", I64, TensorProto.FLOAT, "int"),
                                ("f32_bool", F32, TensorProto.BOOL, "grid"),
                                ("bool_f32", BOOL, TensorProto.FLOAT, "bool"),
                                ("i32_i64", I32, TensorProto.INT64, "int"),
                                ("i64_i32", I64, TensorProto.INT32, "int"),
                                ("bool_i64", BOOL, TensorProto.INT64, "bool"),
                                ("i64_bool", I64, TensorProto.BOOL, "int"),
                                ("f32_f32", F32, TensorProto.FLOAT, "normal")):
        add(case(f"Cast_{name}", "Cast", [R(3, 4, kind=kind, dtype=src)], to=to))
    add(case("Cast_opset9", "Cast", [R(3, 4, kind="grid")], opset=9, to=TensorProto.INT64))
    add(case("Where_float_bcast", "Where", [R(2, 1, 4, kind="bool", dtype=BOOL), R(2, 3, 4), R(4)]))
    add(case("Where_mask_fill", "Where", [R(2, 1, 1, 5, kind="bool", dtype=BOOL), V(-1e4, F32), R(2, 3, 4, 5)]))
    add(case("Where_int64", "Where", [R(4, kind="bool", dtype=BOOL), R(4, kind="int", dtype=I64), V([0], I64)]))
    add(case("Where_opset9", "Where", [R(3, kind="bool", dtype=BOOL), R(3), R(3)], opset=9))
    for op in ("Equal", "Less", "Greater", "GreaterOrEqual"):
        add(case(f"{op}_float", op, [R(3, 4, kind="grid"), R(3, 4, kind="grid")]))
        add(case(f"{op}_bcast", op, [R(2, 3, 4, kind="grid"), R(4, kind="grid")]))
        add(case(f"{op}_int64", op, [R(3, 4, kind="int", dtype=I64), V(0)]))
    add(case("Equal_bool", "Equal", [R(6, kind="bool", dtype=BOOL), R(6, kind="bool", dtype=BOOL)], opset=11))
    add(case("Less_opset9", "Less", [R(5, kind="grid"), R(5, kind="grid")], opset=9))
    add(case("Greater_opset7", "Greater", [R(5, kind="grid"), R(1, kind="grid")], opset=7))
    for op in ("And", "Or"):
        add(case(op, op, [R(3, 4, kind="bool", dtype=BOOL), R(3, 4, kind="bool", dtype=BOOL)]))
        add(case(f"{op}_bcast", op, [R(2, 3, 4, kind="bool", dtype=BOOL), R(4, kind="bool", dtype=BOOL)]))
    add(case("Not", "Not", [R(3, 5, kind="bool", dtype=BOOL)]))
    add(case("IsNaN", "IsNaN", [R(4, 6, kind="nan")]))
    add(case("IsNaN_opset9", "IsNaN", [R(7, kind="nan")], opset=9))
    add(case("Identity", "Identity", [R(2, 3)]))
    add(case("Identity_int64", "Identity", [R(4, kind="int", dtype=I64)]))
    add(case("Identity_const", "Identity", [W(3, 2)]))

    # ---- Resize: opset 10 (scales only), 11/13 (roi, scales, sizes), 18 --------------------------
    add(case("Resize_opset10_nearest", "Resize", [R(1, 2, 3, 4), V([1, 1, 2, 2], F32)], opset=10, mode="nearest"))
    add(case("Resize_opset10_linear", "Resize", [R(1, 2, 3, 4), V([1, 1, 2, 1.5], F32)], opset=10, mode="linear"))
    empty_roi = V([], F32)
    add(case("Resize_opset11_nearest_asym_floor", "Resize", [R(1, 3, 4, 4), empty_roi, V([1, 1, 2, 2], F32)],
             opset=11, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
    add(case("Resize_opset11_linear_align", "Resize", [R(1, 2, 3, 5), empty_roi, V([1, 1, 2, 2], F32)],
             opset=11, mode="linear", coordinate_transformation_mode="align_corners"))
    add(case("Resize_nearest_default", "Resize", [R(1, 2, 4, 4), NONE, V([1, 1, 2, 3], F32)], opset=13))
    add(case("Resize_linear_half_pixel", "Resize", [R(1, 2, 5, 4), NONE, V([1, 1, 2, 2], F32)], opset=13,
             mode="linear"))
    add(case("Resize_linear_pytorch_half_pixel", "Resize", [R(2, 2, 4, 6), NONE, V([1, 1, 1.5, 0.5], F32)],
             opset=13, mode="linear", coordinate_transformation_mode="pytorch_half_pixel"))
    add(case("Resize_linear_sizes_down", "Resize", [R(1, 3, 8, 8), NONE, NONE, V([1, 3, 3, 5])], opset=13,
             mode="linear"))
    add(case("Resize_nearest_sizes", "Resize", [R(1, 1, 3, 3), NONE, NONE, V([1, 1, 7, 5])], opset=13,
             mode="nearest", nearest_mode="round_prefer_ceil"))
    add(case("Resize_cubic", "Resize", [R(1, 2, 4, 4), NONE, V([1, 1, 2, 2], F32)], opset=13, mode="cubic",
             cubic_coeff_a=-0.75))
    add(case("Resize_opset18_axes", "Resize", [R(1, 2, 3, 4), NONE, V([2, 2], F32)], opset=18, mode="nearest",
             axes=[2, 3]))

    # ---- ArgMax, TopK ----------------------------------------------------------------------------
    add(case("ArgMax_axis1_keep", "ArgMax", [R(3, 7, 2)], axis=1))
    add(case("ArgMax_last_nokeep", "ArgMax", [R(4, 9)], axis=-1, keepdims=0))
    add(case("ArgMax_int64", "ArgMax", [R(5, 6, kind="idx:1000", dtype=I64)], axis=0, keepdims=0))
    add(case("ArgMax_opset11", "ArgMax", [R(3, 8)], opset=11, axis=1))
    add(case("TopK_last", "TopK", [R(3, 10), V([4])], n_out=2, axis=-1))
    add(case("TopK_smallest", "TopK", [R(3, 10), V([3])], n_out=2, axis=-1, largest=0))
    add(case("TopK_axis0", "TopK", [R(6, 4), V([2])], n_out=2, axis=0))
    add(case("TopK_opset10", "TopK", [R(2, 9), V([5])], opset=10, n_out=2))
    add(case("TopK_opset9_attr", "TopK", [R(2, 9)], opset=9, n_out=2, k=3))
    return c


CASES = _cases()

# Ops whose integer outputs are indices chosen by comparing floats: under fp16 near-ties may flip,
# so they are checked by the values they select rather than bit for bit.
INDEX_BY_VALUE = {"ArgMax", "TopK"}
