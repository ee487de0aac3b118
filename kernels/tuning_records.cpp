#include "kernels/tuning_records.hpp"

#include <charconv>
#include <vector>

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace troupe::kernels {
namespace {

constexpr std::string_view kMagic = "troupe-tuning-records";
// The integers of a record line: generous bounds (conv_ops checks the cuDNN ranges), enough to
// refuse what no build could mean.
constexpr int64_t kMaxEnumValue = int64_t{1} << 16;
constexpr int64_t kMaxSliceImages = int64_t{1} << 31;
// A key leaves room for the record's numbers on its line.
constexpr size_t kMaxKeyBytes = tuning_records::kMaxLineBytes - 128;

/// A key to_text can write and from_text read back: printable ASCII on one line.
bool writable_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) return false;
  for (char c : key) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

/// Splits the next field (up to one space) off `rest`; false when there is none.
bool next_field(std::string_view& rest, std::string_view& field) {
  const size_t space = rest.find(' ');
  field = rest.substr(0, space);
  rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
  return !field.empty();
}

/// The whole of `field` as a decimal integer in [lo, hi].
std::optional<int64_t> parse_int(std::string_view field, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc() || end != field.data() + field.size() || v < lo || v > hi) {
    return std::nullopt;
  }
  return v;
}

status malformed(size_t line, const std::string& what) {
  return invalid_argument("tuning records, line " + std::to_string(line) + ": " + what);
}

std::string header_of(const tuning_environment& env) {
  return std::string(kMagic) + " " + std::to_string(tuning_records::kFormatVersion) + " cudnn " +
         std::to_string(env.cudnn_version) + " cudart " + std::to_string(env.cuda_runtime_version);
}

}  // namespace

tuning_environment current_tuning_environment() {
#ifdef TROUPE_HAVE_CUDA
  return cuda::library_versions();
#else
  return {};
#endif
}

tuning_counts tuning_stats() {
  return tuning_records::process().counts();
}

tuning_records& tuning_records::process() {
  static tuning_records records;
  return records;
}

std::optional<tuning_record> tuning_records::find(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> tuning_records::find_form(const std::string& form_key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = forms_.find(form_key);
  if (it == forms_.end()) return std::nullopt;
  return it->second;
}

tuning_record tuning_records::record(const std::string& key, const std::string& form_key,
                                     const tuning_record& r) {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool new_form = forms_.emplace(form_key, r.variant).second;
  const auto [it, new_record] = records_.emplace(key, r);
  if (new_form || new_record) ++generation_;
  return it->second;
}

void tuning_records::forget(const std::string& key, const tuning_record& r) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = records_.find(key);
  if (it != records_.end() && it->second == r) records_.erase(it);
}

void tuning_records::forget_form(const std::string& form_key, int32_t variant) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = forms_.find(form_key);
  if (it != forms_.end() && it->second == variant) forms_.erase(it);
}

void tuning_records::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  records_.clear();
  forms_.clear();
  ++generation_;
}

size_t tuning_records::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return records_.size();
}

size_t tuning_records::form_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return forms_.size();
}

uint64_t tuning_records::generation() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generation_;
}

tuning_counts tuning_records::counts() const {
  return {searched_.load(std::memory_order_relaxed), adopted_.load(std::memory_order_relaxed)};
}

std::string tuning_records::to_text(const tuning_environment& env) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string text = header_of(env) + "\n";
  size_t records = 0, forms = 0;
  for (const auto& [key, r] : records_) {
    if (!writable_key(key) || records == kMaxRecords) continue;
    text += "r " + std::to_string(r.variant) + " " + std::to_string(r.slice_images) + " " +
            std::to_string(r.algo) + " " + std::to_string(r.math) + " " + (r.fused ? "1" : "0") +
            " " + key + "\n";
    ++records;
  }
  for (const auto& [key, variant] : forms_) {
    if (!writable_key(key) || forms == kMaxRecords) continue;
    text += "f " + std::to_string(variant) + " " + key + "\n";
    ++forms;
  }
  text += "end " + std::to_string(records) + " " + std::to_string(forms) + "\n";
  return text;
}

expected<size_t> tuning_records::from_text(std::string_view text, const tuning_environment& env) {
  if (text.size() > kMaxTextBytes) {
    return invalid_argument("tuning records: " + std::to_string(text.size()) +
                            " bytes, more than the " + std::to_string(kMaxTextBytes) + " accepted");
  }
  std::vector<std::pair<std::string, tuning_record>> records;
  std::vector<std::pair<std::string, int32_t>> forms;
  bool ended = false;
  size_t line_number = 0;
  size_t at = 0;
  while (at < text.size()) {
    ++line_number;
    const size_t newline = text.find('\n', at);
    const size_t end = newline == std::string_view::npos ? text.size() : newline;
    const std::string_view line = text.substr(at, end - at);
    at = newline == std::string_view::npos ? text.size() : newline + 1;
    if (line.size() > kMaxLineBytes) {
      return malformed(line_number, "longer than " + std::to_string(kMaxLineBytes) + " bytes");
    }
    if (ended) return malformed(line_number, "text after the end line");
    std::string_view rest = line, field;
    if (!next_field(rest, field)) return malformed(line_number, "empty");
    if (line_number == 1) {
      // The header: the format first (a later version may say more after it), then the libraries.
      if (field != kMagic) return invalid_argument("not a tuning records text (no header line)");
      std::string_view version, cudnn_word, cudnn, cudart_word, cudart;
      if (!next_field(rest, version)) return malformed(1, "no format version");
      if (version != std::to_string(kFormatVersion)) {
        return unsupported("tuning records of format version '" + std::string(version) +
                           "'; this build reads version " + std::to_string(kFormatVersion));
      }
      std::optional<int64_t> cudnn_v, cudart_v;
      if (next_field(rest, cudnn_word) && cudnn_word == "cudnn" && next_field(rest, cudnn)) {
        cudnn_v = parse_int(cudnn, 0, INT64_MAX);
      }
      if (next_field(rest, cudart_word) && cudart_word == "cudart" && next_field(rest, cudart)) {
        cudart_v = parse_int(cudart, 0, INT64_MAX);
      }
      if (!cudnn_v || !cudart_v || !rest.empty()) {
        return malformed(1, "expected '" + header_of(env) + "'");
      }
      const tuning_environment theirs{*cudnn_v, *cudart_v};
      if (!(theirs == env)) {
        return unsupported("tuning records made with cuDNN " + std::to_string(*cudnn_v) +
                           " and CUDA runtime " + std::to_string(*cudart_v) +
                           "; this process runs cuDNN " + std::to_string(env.cudnn_version) +
                           " and CUDA runtime " + std::to_string(env.cuda_runtime_version));
      }
      continue;
    }
    if (field == "r") {
      std::string_view f[5];
      for (auto& x : f) {
        if (!next_field(rest, x))
          return malformed(line_number, "a record needs 5 numbers and a key");
      }
      const auto variant = parse_int(f[0], 0, kMaxEnumValue);
      const auto slice_images = parse_int(f[1], 1, kMaxSliceImages);
      const auto algo = parse_int(f[2], 0, kMaxEnumValue);
      const auto math = parse_int(f[3], 0, kMaxEnumValue);
      const auto fused = parse_int(f[4], 0, 1);
      if (!variant || !slice_images || !algo || !math || !fused) {
        return malformed(line_number, "a record's number is not one or out of range");
      }
      if (!writable_key(rest)) return malformed(line_number, "no valid key");
      if (records.size() == kMaxRecords) {
        return malformed(line_number, "more than " + std::to_string(kMaxRecords) + " records");
      }
      records.emplace_back(
          std::string(rest),
          tuning_record{static_cast<int32_t>(*variant), *slice_images, static_cast<int32_t>(*algo),
                        static_cast<int32_t>(*math), *fused == 1});
    } else if (field == "f") {
      std::string_view v;
      if (!next_field(rest, v)) return malformed(line_number, "a form needs a number and a key");
      const auto variant = parse_int(v, 0, kMaxEnumValue);
      if (!variant) return malformed(line_number, "a form's number is not one or out of range");
      if (!writable_key(rest)) return malformed(line_number, "no valid key");
      if (forms.size() == kMaxRecords) {
        return malformed(line_number, "more than " + std::to_string(kMaxRecords) + " forms");
      }
      forms.emplace_back(std::string(rest), static_cast<int32_t>(*variant));
    } else if (field == "end") {
      std::string_view r, fm;
      std::optional<int64_t> nr, nf;
      if (next_field(rest, r) && next_field(rest, fm) && rest.empty()) {
        nr = parse_int(r, 0, INT64_MAX);
        nf = parse_int(fm, 0, INT64_MAX);
      }
      if (!nr || !nf) return malformed(line_number, "expected 'end <records> <forms>'");
      if (static_cast<size_t>(*nr) != records.size() || static_cast<size_t>(*nf) != forms.size()) {
        return malformed(line_number, "the end line counts " + std::to_string(*nr) +
                                          " records and " + std::to_string(*nf) +
                                          " forms; the text holds " +
                                          std::to_string(records.size()) + " and " +
                                          std::to_string(forms.size()));
      }
      ended = true;
    } else {
      return malformed(line_number, "unknown line kind '" + std::string(field.substr(0, 16)) + "'");
    }
  }
  if (line_number == 0) return invalid_argument("tuning records: empty text");
  if (!ended) return invalid_argument("tuning records: no end line (a truncated text?)");
  // A text to_text wrote names each key once; one that does not is not such a text.
  std::map<std::string, tuning_record> record_map;
  std::map<std::string, int32_t> form_map;
  for (auto& [key, r] : records) {
    if (!record_map.emplace(std::move(key), r).second) {
      return invalid_argument("tuning records: a key recorded twice");
    }
  }
  for (auto& [key, v] : forms) {
    if (!form_map.emplace(std::move(key), v).second) {
      return invalid_argument("tuning records: a form key recorded twice");
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  size_t added = 0;
  bool changed = false;
  for (auto& [key, r] : record_map) {
    if (records_.emplace(key, r).second) {
      ++added;
      changed = true;
    }
  }
  for (auto& [key, v] : form_map) changed = forms_.emplace(key, v).second || changed;
  if (changed) ++generation_;
  return added;
}

}  // namespace troupe::kernels
