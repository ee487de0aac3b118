#include "runtime/onnx_loader.hpp"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "runtime/regular_file.hpp"

namespace troupe::runtime {
namespace {

namespace fs = std::filesystem;

/// Largest tensor accepted from a model file: guards against dims that multiply to absurd sizes.
constexpr int64_t max_tensor_elements = int64_t{1} << 36;

expected<std::string> read_file(const std::string& path, size_t max_bytes) {
  TROUPE_ASSIGN_OR_RETURN(regular_file f, regular_file::open(path, "'" + path + "'"));
  return f.read_all(max_bytes, error_code::invalid_model);
}

/// Whether `inner` is `outer` or lies below it; both are canonical (absolute, no symlinks, no
/// "." or "..").
bool is_within(const fs::path& outer, const fs::path& inner) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *o != *i) return false;
  }
  return true;
}

/// External data must stay inside the model's folder: the location is a relative path without
/// "..", and its real path (every symbolic link resolved, the folder's own included) lies inside
/// the real path of the folder holding the model file. A symlink beside model.onnx pointing
/// elsewhere (or a symlinked subfolder) would otherwise let a model read any file the node can
/// read and send its bytes to clients as outputs. Returns the resolved path.
expected<std::string> resolve_external_path(const std::string& base_dir,
                                            const std::string& location,
                                            const std::string& tensor_name) {
  const std::string what =
      "tensor '" + tensor_name + "': external data location '" + location + "'";
  if (base_dir.empty()) return invalid_model(what + " needs a model file path");
  const fs::path rel(location);
  if (location.empty() || rel.is_absolute() || rel.has_root_name()) {
    return invalid_model(what + " must be a relative path");
  }
  for (const auto& part : rel) {
    if (part == "..") return invalid_model(what + " leaves the model folder");
  }
  std::error_code ec;
  const fs::path folder = fs::canonical(base_dir, ec);
  if (ec)
    return io_error(what + ": cannot resolve the model folder '" + base_dir + "': " + ec.message());
  const fs::path real = fs::weakly_canonical(folder / rel, ec);
  if (ec)
    return io_error(what + ": cannot resolve '" + (folder / rel).string() + "': " + ec.message());
  if (!is_within(folder, real)) {
    return invalid_model(what + " resolves to '" + real.string() + "', outside the model folder '" +
                         folder.string() + "' (symbolic links may not leave it)");
  }
  return real.string();
}

expected<tensor> external_tensor(const onnx::TensorProto& t, dtype type, const shape_t& shape,
                                 const std::string& base_dir) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (...) {
      return invalid_model("tensor '" + t.name() + "': bad external data field '" + kv.key() + "'");
    }
  }
  TROUPE_ASSIGN_OR_RETURN(std::string path, resolve_external_path(base_dir, location, t.name()));
  const size_t want = static_cast<size_t>(element_count(shape)) * dtype_size(type);
  if (offset < 0) return invalid_model("tensor '" + t.name() + "': negative external data offset");
  if (length >= 0 && static_cast<size_t>(length) != want) {
    return invalid_model("tensor '" + t.name() + "': external data length " + std::to_string(length) +
                         " does not match " + std::to_string(want) + " bytes of " +
                         dtype_name(type).data() + shape_to_string(shape));
  }
  const std::string what = "tensor '" + t.name() + "': external data file '" + path + "'";
  // A FIFO or a device named as external data is the model's fault (invalid_model). The path is
  // resolved: a symbolic link in its place now would be a swap made after the check.
  TROUPE_ASSIGN_OR_RETURN(
      regular_file file,
      regular_file::open(path, what, error_code::invalid_model, /*no_follow=*/true));
  if (static_cast<uint64_t>(offset) + want > file.size()) {
    return invalid_model(what + " is too short for offset " + std::to_string(offset) + " + " +
                         std::to_string(want) + " bytes");
  }
  tensor out = tensor::allocate(type, shape);
  TROUPE_RETURN_IF_ERROR(file.read_at(static_cast<uint64_t>(offset), out.raw(), want));
  return out;
}

template <class Dst, class Field>
status copy_field(const Field& field, tensor& out, const std::string& name) {
  if (static_cast<int64_t>(field.size()) != out.elements()) {
    return invalid_model("tensor '" + name + "': has " + std::to_string(field.size()) +
                         " values, its shape " + shape_to_string(out.shape()) + " needs " +
                         std::to_string(out.elements()));
  }
  Dst* dst = out.data<Dst>();
  for (int i = 0; i < field.size(); ++i) dst[i] = static_cast<Dst>(field.Get(i));
  return status::ok();
}

expected<tensor> convert_tensor(const onnx::TensorProto& t, const std::string& base_dir) {
  if (t.has_segment()) return unsupported("tensor '" + t.name() + "': segmented tensors are not supported");
  auto type = dtype_from_onnx(t.data_type());
  if (!type) return type.error().with_context("tensor '" + t.name() + "'");
  shape_t shape;
  int64_t count = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) return invalid_model("tensor '" + t.name() + "' has a negative dimension");
    shape.push_back(d);
    if (d != 0 && count > max_tensor_elements / d) {
      return invalid_model("tensor '" + t.name() + "' is too large: " + shape_to_string(shape));
    }
    count *= d;
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL) return external_tensor(t, *type, shape, base_dir);

  tensor out = tensor::allocate(*type, shape);
  const size_t want = out.bytes();
  if (t.has_raw_data()) {
    if (t.raw_data().size() != want) {
      return invalid_model("tensor '" + t.name() + "': raw data has " + std::to_string(t.raw_data().size()) +
                           " bytes, " + dtype_name(*type).data() + shape_to_string(shape) + " needs " +
                           std::to_string(want));
    }
    if (want) std::memcpy(out.raw(), t.raw_data().data(), want);
    return out;
  }
  switch (*type) {
    case dtype::f32: TROUPE_RETURN_IF_ERROR(copy_field<float>(t.float_data(), out, t.name())); break;
    case dtype::f64: TROUPE_RETURN_IF_ERROR(copy_field<double>(t.double_data(), out, t.name())); break;
    case dtype::i64: TROUPE_RETURN_IF_ERROR(copy_field<int64_t>(t.int64_data(), out, t.name())); break;
    case dtype::i32: TROUPE_RETURN_IF_ERROR(copy_field<int32_t>(t.int32_data(), out, t.name())); break;
    case dtype::i16: TROUPE_RETURN_IF_ERROR(copy_field<int16_t>(t.int32_data(), out, t.name())); break;
    case dtype::i8: TROUPE_RETURN_IF_ERROR(copy_field<int8_t>(t.int32_data(), out, t.name())); break;
    case dtype::u8: TROUPE_RETURN_IF_ERROR(copy_field<uint8_t>(t.int32_data(), out, t.name())); break;
    case dtype::boolean: TROUPE_RETURN_IF_ERROR(copy_field<uint8_t>(t.int32_data(), out, t.name())); break;
    case dtype::u16: case dtype::f16: case dtype::bf16:  // stored as uint16 bit patterns in int32_data
      TROUPE_RETURN_IF_ERROR(copy_field<uint16_t>(t.int32_data(), out, t.name()));
      break;
    case dtype::u32: TROUPE_RETURN_IF_ERROR(copy_field<uint32_t>(t.uint64_data(), out, t.name())); break;
    case dtype::u64: TROUPE_RETURN_IF_ERROR(copy_field<uint64_t>(t.uint64_data(), out, t.name())); break;
    case dtype::undefined: return invalid_model("tensor '" + t.name() + "' has no data type");
  }
  return out;
}

expected<attribute::value_type> convert_attribute(const onnx::AttributeProto& a, const std::string& base_dir) {
  using A = onnx::AttributeProto;
  switch (a.type()) {
    case A::FLOAT: return attribute::value_type(a.f());
    case A::INT: return attribute::value_type(static_cast<int64_t>(a.i()));
    case A::STRING: return attribute::value_type(a.s());
    case A::TENSOR: {
      TROUPE_ASSIGN_OR_RETURN(tensor t, convert_tensor(a.t(), base_dir));
      return attribute::value_type(std::move(t));
    }
    case A::FLOATS: return attribute::value_type(std::vector<float>(a.floats().begin(), a.floats().end()));
    case A::INTS: return attribute::value_type(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
    case A::STRINGS:
      return attribute::value_type(std::vector<std::string>(a.strings().begin(), a.strings().end()));
    case A::UNDEFINED:
      // Old exporters leave the type unset; infer it from the populated field.
      if (a.has_f()) return attribute::value_type(a.f());
      if (a.has_i()) return attribute::value_type(static_cast<int64_t>(a.i()));
      if (a.has_s()) return attribute::value_type(a.s());
      if (a.ints_size()) return attribute::value_type(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
      if (a.floats_size()) return attribute::value_type(std::vector<float>(a.floats().begin(), a.floats().end()));
      return invalid_model("attribute '" + a.name() + "' has no type");
    default:
      return unsupported("attribute '" + a.name() + "' of kind " + std::to_string(a.type()) +
                         " (subgraphs, sparse tensors, type protos) is not supported");
  }
}

expected<std::pair<dtype, std::optional<symbolic_shape>>> convert_value_info(const onnx::ValueInfoProto& vi) {
  if (!vi.has_type()) return std::pair<dtype, std::optional<symbolic_shape>>{dtype::undefined, std::nullopt};
  if (!vi.type().has_tensor_type()) {
    return unsupported("value '" + vi.name() + "' is not a tensor (sequences, maps, optionals are not supported)");
  }
  const auto& tt = vi.type().tensor_type();
  dtype type = dtype::undefined;
  if (tt.elem_type() != 0) {
    auto t = dtype_from_onnx(tt.elem_type());
    if (!t) return t.error().with_context("value '" + vi.name() + "'");
    type = *t;
  }
  std::optional<symbolic_shape> shape;
  if (tt.has_shape()) {
    symbolic_shape s;
    for (const auto& d : tt.shape().dim()) {
      dim x;
      if (d.has_dim_value()) {
        if (d.dim_value() < 0) return invalid_model("value '" + vi.name() + "' has a negative dimension");
        x.size = d.dim_value();
      } else if (d.has_dim_param()) {
        x.symbol = d.dim_param();
      }
      s.push_back(std::move(x));
    }
    shape = std::move(s);
  }
  return std::pair<dtype, std::optional<symbolic_shape>>{type, std::move(shape)};
}

/// libonnx 1.12 knows opsets up to 17: its checker is run where it can judge the whole model.
status run_checker(const onnx::ModelProto& model, int64_t default_opset, const std::string& base_dir) {
  if (default_opset > 17) return status::ok();
  try {
    onnx::checker::CheckerContext ctx;
    ctx.set_ir_version(static_cast<int>(model.ir_version()));
    ctx.set_model_dir(base_dir);  // external data is checked relative to the model file
    std::unordered_map<std::string, int> opsets;
    for (const auto& o : model.opset_import()) opsets[o.domain()] = static_cast<int>(o.version());
    ctx.set_opset_imports(opsets);
    onnx::checker::LexicalScopeContext scope;
    onnx::checker::check_graph(model.graph(), ctx, scope);
  } catch (const std::exception& e) {
    std::string what = e.what();
    // Ops outside the standard domains are reported by troupe's own support check instead.
    // libonnx 1.12 insists on shapes for graph outputs; ONNX allows them to be absent.
    if (what.find("Field 'shape' of 'type' is required") != std::string::npos) return status::ok();
    if (what.find("No Op registered") != std::string::npos ||
        what.find("No opset import for domain") != std::string::npos) {
      return status::ok();
    }
    return invalid_model("the ONNX checker rejected the model: " + what);
  }
  return status::ok();
}

expected<graph> convert_model(const onnx::ModelProto& model, const std::string& base_dir) {
  graph g;
  if (!model.has_graph()) return invalid_model("the file holds no graph (is it an ONNX model?)");
  for (const auto& o : model.opset_import()) {
    const std::string domain = o.domain() == "ai.onnx" ? "" : o.domain();
    g.opsets[domain] = o.version();
  }
  if (model.opset_import_size() == 0) g.opsets[""] = 1;  // IR < 3 models carry no opset import
  const int64_t opset = g.opset("");
  if (g.opsets.count("") && (opset < min_supported_opset || opset > max_supported_opset)) {
    return unsupported("opset " + std::to_string(opset) + " of the default domain is not supported (troupe runs opsets " +
                       std::to_string(min_supported_opset) + " to " + std::to_string(max_supported_opset) + ")");
  }
  TROUPE_RETURN_IF_ERROR(run_checker(model, opset, base_dir));

  const auto& gp = model.graph();
  g.name = gp.name();
  g.producer = model.producer_name() + (model.producer_version().empty() ? "" : " " + model.producer_version());

  for (const auto& init : gp.initializer()) {
    if (init.name().empty()) return invalid_model("an initializer has no name");
    if (g.find(init.name()) >= 0) return invalid_model("initializer '" + init.name() + "' is defined twice");
    TROUPE_ASSIGN_OR_RETURN(tensor t, convert_tensor(init, base_dir));
    value v;
    v.name = init.name();
    v.type = t.type();
    v.shape = t.shape();
    v.constant = std::move(t);
    g.add_value(std::move(v));
  }
  if (gp.sparse_initializer_size() > 0) return unsupported("sparse initializers are not supported");

  for (const auto& in : gp.input()) {
    if (in.name().empty()) return invalid_model("a graph input has no name");
    int existing = g.find(in.name());
    if (existing >= 0) {
      if (!g.values[existing].constant) return invalid_model("graph input '" + in.name() + "' is listed twice");
      continue;  // an initializer listed as input (IR < 4): troupe treats it as a constant
    }
    TROUPE_ASSIGN_OR_RETURN(auto ti, convert_value_info(in));
    if (ti.first == dtype::undefined) return invalid_model("graph input '" + in.name() + "' has no element type");
    if (!ti.second) return unsupported("graph input '" + in.name() + "' has no shape (its rank must be known)");
    value v;
    v.name = in.name();
    v.type = ti.first;
    v.declared_shape = std::move(ti.second);
    v.is_graph_input = true;
    g.inputs.push_back(g.add_value(std::move(v)));
  }

  auto get_or_add = [&g](const std::string& name) {
    int id = g.find(name);
    if (id < 0) {
      value v;
      v.name = name;
      id = g.add_value(std::move(v));
    }
    return id;
  };

  int node_index = 0;
  for (const auto& np : gp.node()) {
    node n;
    n.op.op_type = np.op_type();
    n.op.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    n.op.name = np.name().empty() ? np.op_type() + "_" + std::to_string(node_index) : np.name();
    ++node_index;
    if (n.op.op_type.empty()) return invalid_model("node '" + n.op.name + "' has no op type");
    auto it = g.opsets.find(n.op.domain);
    if (it == g.opsets.end()) {
      return invalid_model("node '" + n.op.name + "' uses domain '" + n.op.domain + "', which the model does not import");
    }
    n.op.opset = it->second;
    for (const auto& a : np.attribute()) {
      if (a.name().empty()) return invalid_model("node '" + n.op.name + "' has an attribute without a name");
      if (!a.ref_attr_name().empty()) return unsupported("node '" + n.op.name + "': attribute references are not supported");
      auto v = convert_attribute(a, base_dir);
      if (!v) return v.error().with_context("node '" + n.op.name + "' (" + n.op.op_type + ")");
      n.op.attrs.set(a.name(), std::move(*v));
    }
    for (const auto& in : np.input()) n.inputs.push_back(in.empty() ? -1 : get_or_add(in));
    for (const auto& out : np.output()) {
      if (out.empty()) {
        n.outputs.push_back(-1);
        continue;
      }
      const int id = get_or_add(out);
      if (g.values[id].is_graph_input || g.values[id].constant) {
        return invalid_model("node '" + n.op.name + "' writes '" + out + "', which is a graph input or initializer");
      }
      n.outputs.push_back(id);
    }
    g.nodes.push_back(std::move(n));
  }

  for (const auto& vi : gp.value_info()) {
    const int id = g.find(vi.name());
    if (id < 0) continue;
    auto ti = convert_value_info(vi);
    if (!ti) continue;  // value_info is a hint; a non-tensor hint is ignored
    if (g.values[id].type == dtype::undefined) g.values[id].type = ti->first;
    if (!g.values[id].declared_shape) g.values[id].declared_shape = ti->second;
  }

  for (const auto& out : gp.output()) {
    const int id = g.find(out.name());
    if (id < 0) return invalid_model("graph output '" + out.name() + "' is not produced by any node");
    TROUPE_ASSIGN_OR_RETURN(auto ti, convert_value_info(out));
    value& v = g.values[id];
    if (v.type == dtype::undefined) v.type = ti.first;
    if (ti.second) v.declared_shape = ti.second;
    v.is_graph_output = true;
    g.outputs.push_back(id);
  }
  if (g.outputs.empty()) return invalid_model("the graph has no outputs");
  TROUPE_RETURN_IF_ERROR(g.sort_topologically());
  return g;
}

}  // namespace

expected<graph> load_onnx_bytes(const void* data, size_t size, const std::string& base_dir) {
  if (size > max_model_bytes || size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return invalid_model("model is larger than protobuf's 2 GiB limit: store weights as external data");
  }
  onnx::ModelProto model;
  if (!model.ParseFromArray(data, static_cast<int>(size))) {
    return invalid_model("the bytes are not a valid ONNX protobuf (corrupt or not an ONNX file)");
  }
  return convert_model(model, base_dir);
}

expected<graph> load_onnx_file(const std::string& path) {
  auto bytes = read_file(path, max_model_bytes);
  if (!bytes) return bytes.error().with_context("loading '" + path + "'");
  const std::string base = fs::path(path).parent_path().string();
  auto g = load_onnx_bytes(bytes->data(), bytes->size(), base.empty() ? "." : base);
  if (!g) return g.error().with_context("loading '" + path + "'");
  return g;
}

expected<tensor> parse_tensor_pb(const void* data, size_t size) {
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) return invalid_argument("tensor file is too large");
  onnx::TensorProto t;
  if (!t.ParseFromArray(data, static_cast<int>(size))) return invalid_argument("not a valid TensorProto");
  return convert_tensor(t, "");
}

expected<tensor> load_tensor_pb_file(const std::string& path) {
  TROUPE_ASSIGN_OR_RETURN(std::string bytes, read_file(path, max_model_bytes));
  auto t = parse_tensor_pb(bytes.data(), bytes.size());
  if (!t) return t.error().with_context("reading '" + path + "'");
  return t;
}

}  // namespace troupe::runtime
