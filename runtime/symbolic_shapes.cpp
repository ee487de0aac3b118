#include "runtime/symbolic_shapes.hpp"

#include <set>

#include "runtime/specialize.hpp"

namespace troupe::runtime {
namespace {

/// Two probe values per symbol, distinct primes so that products and multiples are unambiguous.
constexpr int64_t probes_a[] = {3, 5, 7, 11, 13, 17, 19, 23};
constexpr int64_t probes_b[] = {29, 31, 37, 41, 43, 47, 53, 59};

expected<graph> probe(const graph& g, const std::vector<std::string>& symbols, const int64_t* values,
                      const std::map<std::string, int64_t>& fixed) {
  graph copy = g;
  std::vector<tensor_info> infos;
  for (int v : copy.inputs) {
    const value& in = copy.values[v];
    tensor_info info{in.type, {}};
    if (in.declared_shape) {
      for (const dim& d : *in.declared_shape) {
        if (d.is_static()) {
          info.shape.push_back(d.size);
          continue;
        }
        const std::string sym = d.symbol.empty() ? "?" + in.name : d.symbol;
        if (auto f = fixed.find(sym); f != fixed.end()) {
          info.shape.push_back(f->second);
          continue;
        }
        size_t k = 0;
        while (k < symbols.size() && symbols[k] != sym) ++k;
        info.shape.push_back(values[k]);
      }
    }
    infos.push_back(std::move(info));
  }
  TROUPE_RETURN_IF_ERROR(infer_concrete_shapes(copy, infos));
  return copy;
}

dim explain(int64_t a, int64_t b, const std::vector<std::string>& symbols) {
  if (a == b) return dim{a, ""};
  const size_t n = symbols.size();
  for (size_t i = 0; i < n; ++i) {
    if (a == probes_a[i] && b == probes_b[i]) return dim{-1, symbols[i]};
  }
  for (size_t i = 0; i < n; ++i) {
    if (a % probes_a[i] == 0 && b % probes_b[i] == 0 && a / probes_a[i] == b / probes_b[i]) {
      return dim{-1, symbols[i] + "*" + std::to_string(a / probes_a[i])};
    }
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      const int64_t pa = probes_a[i] * probes_a[j], pb = probes_b[i] * probes_b[j];
      if (a % pa == 0 && b % pb == 0 && a / pa == b / pb) {
        const int64_t k = a / pa;
        return dim{-1, symbols[i] + "*" + symbols[j] + (k == 1 ? "" : "*" + std::to_string(k))};
      }
    }
  }
  return dim{-1, "?"};
}

}  // namespace

expected<std::map<std::string, symbolic_value_info>> infer_symbolic_shapes(
    const graph& g, const std::map<std::string, int64_t>& fixed) {
  std::vector<std::string> symbols;
  std::set<std::string> seen;
  for (int v : g.inputs) {
    const value& in = g.values[v];
    if (!in.declared_shape) return unsupported("input '" + in.name + "' has no declared shape");
    for (const dim& d : *in.declared_shape) {
      if (d.is_static()) continue;
      const std::string sym = d.symbol.empty() ? "?" + in.name : d.symbol;
      if (fixed.count(sym) || !seen.insert(sym).second) continue;
      symbols.push_back(sym);
    }
  }
  if (symbols.size() > std::size(probes_a)) return unsupported("more than 8 distinct dimension symbols");
  TROUPE_ASSIGN_OR_RETURN(graph a, probe(g, symbols, probes_a, fixed));
  TROUPE_ASSIGN_OR_RETURN(graph b, probe(g, symbols, probes_b, fixed));
  std::map<std::string, symbolic_value_info> out;
  for (size_t v = 0; v < a.values.size(); ++v) {
    const value& va = a.values[v];
    const value& vb = b.values[v];
    if (va.name.empty() || va.type == dtype::undefined) continue;
    symbolic_value_info info{va.type, {}};
    if (va.shape.size() != vb.shape.size()) {
      info.shape.push_back(dim{-1, "?rank"});  // rank depends on the symbols' values
    } else {
      for (size_t k = 0; k < va.shape.size(); ++k) info.shape.push_back(explain(va.shape[k], vb.shape[k], symbols));
    }
    out[va.name] = std::move(info);
  }
  return out;
}

}  // namespace troupe::runtime
