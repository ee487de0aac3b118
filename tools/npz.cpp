#include "tools/npz.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <set>
#include <string_view>

namespace troupe::tools {
namespace {

static_assert(std::endian::native == std::endian::little,
              ".npy/.zip fields are little-endian and read with memcpy");

constexpr std::string_view npy_magic{"\x93NUMPY", 6};
// Largest array data we accept from a file: far above any model input, far below what a size
// field can claim, so that a forged header cannot make us allocate absurd amounts.
constexpr uint64_t max_array_bytes = uint64_t{1} << 40;
// Deflate cannot expand data by more than ~1032:1; a member claiming more is forged.
constexpr uint64_t max_deflate_ratio = 1100;

// Zip record signatures and fixed sizes (APPNOTE.TXT 4.3).
constexpr uint32_t local_header_sig = 0x04034b50;
constexpr uint32_t central_header_sig = 0x02014b50;
constexpr uint32_t eocd_sig = 0x06054b50;
constexpr uint32_t zip64_eocd_sig = 0x06064b50;
constexpr uint32_t zip64_locator_sig = 0x07064b50;
constexpr size_t local_header_bytes = 30;
constexpr size_t central_header_bytes = 46;
constexpr size_t eocd_bytes = 22;
constexpr size_t zip64_eocd_bytes = 56;
constexpr size_t zip64_locator_bytes = 20;
constexpr uint16_t zip64_extra_id = 0x0001;
constexpr uint32_t u32_max = 0xFFFFFFFFu;
constexpr uint16_t u16_max = 0xFFFFu;

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// A bounds-checked view of bytes: every read says whether it fit.
struct byte_view {
  const uint8_t* data = nullptr;
  size_t size = 0;

  bool fits(uint64_t offset, uint64_t length) const {
    return offset <= size && length <= size - offset;
  }
};

status bad_npy(const std::string& what) {
  return invalid_argument(".npy: " + what);
}
status bad_zip(const std::string& what) {
  return invalid_argument(".npz: " + what);
}

// ---- .npy header --------------------------------------------------------------------------------

/// The header dict numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
struct npy_header {
  std::string descr;
  bool fortran_order = false;
  shape_t shape;
  bool has_descr = false, has_order = false, has_shape = false;
};

class header_parser {
 public:
  explicit header_parser(std::string_view text) : s_(text) {}

  expected<npy_header> parse() {
    npy_header h;
    skip_ws();
    if (!eat('{')) return bad_npy("header is not a dict");
    while (true) {
      skip_ws();
      if (eat('}')) break;
      auto key = parse_string();
      if (!key) return key.error();
      skip_ws();
      if (!eat(':')) return bad_npy("expected ':' after key '" + *key + "'");
      skip_ws();
      if (*key == "descr") {
        if (peek() == '[') return unsupported(".npy: structured dtypes are not supported");
        auto d = parse_string();
        if (!d) return d.error();
        h.descr = std::move(*d);
        h.has_descr = true;
      } else if (*key == "fortran_order") {
        auto b = parse_bool();
        if (!b) return b.error();
        h.fortran_order = *b;
        h.has_order = true;
      } else if (*key == "shape") {
        auto shape = parse_int_tuple();
        if (!shape) return shape.error();
        h.shape = std::move(*shape);
        h.has_shape = true;
      } else {
        return bad_npy("unexpected header key '" + *key + "'");
      }
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat('}')) break;
      return bad_npy("expected ',' or '}' in header");
    }
    if (!h.has_descr || !h.has_order || !h.has_shape)
      return bad_npy("header lacks 'descr', 'fortran_order' or 'shape'");
    return h;
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  expected<std::string> parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') return bad_npy("expected a quoted string in header");
    ++pos_;
    const size_t end = s_.find(quote, pos_);
    if (end == std::string_view::npos) return bad_npy("unterminated string in header");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  expected<bool> parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return bad_npy("expected True or False in header");
  }
  expected<shape_t> parse_int_tuple() {
    if (!eat('(')) return bad_npy("shape is not a tuple");
    shape_t shape;
    while (true) {
      skip_ws();
      if (eat(')')) break;
      if (peek() < '0' || peek() > '9') return bad_npy("shape holds a non-integer");
      uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        v = v * 10 + static_cast<uint64_t>(peek() - '0');
        if (v > max_array_bytes) return bad_npy("shape dimension too large");
        ++pos_;
      }
      eat('L');  // Python 2 longs in files written long ago
      shape.push_back(static_cast<int64_t>(v));
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat(')')) break;
      return bad_npy("expected ',' or ')' in shape");
    }
    return shape;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

struct npy_layout {
  dtype type = dtype::undefined;
  shape_t shape;
  size_t data_offset = 0;
  uint64_t data_bytes = 0;
};

/// Validates the magic, version, header and the data size against the bytes available.
expected<npy_layout> parse_npy_layout(byte_view in) {
  if (!in.fits(0, 10) || std::memcmp(in.data, npy_magic.data(), npy_magic.size()) != 0)
    return bad_npy("missing magic string (not a .npy file)");
  const uint8_t major = in.data[6];
  size_t header_start = 0;
  uint64_t header_len = 0;
  if (major == 1) {
    header_start = 10;
    header_len = load_le<uint16_t>(in.data + 8);
  } else if (major == 2 || major == 3) {
    if (!in.fits(0, 12)) return bad_npy("truncated header");
    header_start = 12;
    header_len = load_le<uint32_t>(in.data + 8);
  } else {
    return unsupported(".npy: format version " + std::to_string(major) + " is not supported");
  }
  if (!in.fits(header_start, header_len)) return bad_npy("truncated header");
  std::string_view text(reinterpret_cast<const char*>(in.data + header_start), header_len);
  auto header = header_parser(text).parse();
  if (!header) return header.error();

  std::string descr = header->descr;
  // One-byte types have no byte order; numpy writes '|' but '<'/'>' mean the same.
  if (descr.size() == 3 && descr[0] == '>' && descr[2] == '1') descr[0] = '|';
  auto type = dtype_from_numpy(descr);
  if (!type) return type.error();

  npy_layout layout;
  layout.type = *type;
  layout.shape = std::move(header->shape);
  uint64_t elements = 1;
  int dims_above_one = 0;
  for (int64_t d : layout.shape) {
    if (d > 1) ++dims_above_one;
    if (d != 0 && elements > max_array_bytes / static_cast<uint64_t>(d))
      return bad_npy("shape " + shape_to_string(layout.shape) + " is too large");
    elements *= static_cast<uint64_t>(d);
  }
  layout.data_bytes = elements * dtype_size(layout.type);
  if (layout.data_bytes > max_array_bytes)
    return bad_npy("shape " + shape_to_string(layout.shape) + " is too large");
  // Fortran order lays out the same bytes as C order when at most one dimension exceeds 1
  // (scalars, vectors, [1, n]...); anything else would need a transpose we do not do.
  if (header->fortran_order && dims_above_one > 1)
    return unsupported(".npy: fortran_order=True is not supported for shape " +
                       shape_to_string(layout.shape));
  layout.data_offset = header_start + header_len;
  if (!in.fits(layout.data_offset, layout.data_bytes))
    return bad_npy("data truncated: header promises " + std::to_string(layout.data_bytes) +
                   " bytes, file holds " + std::to_string(in.size - layout.data_offset));
  return layout;
}

expected<tensor> make_tensor(const npy_layout& layout, const uint8_t* data) {
  tensor t = tensor::allocate(layout.type, layout.shape);
  if (layout.data_bytes != 0 && t.raw() == nullptr)
    return status(error_code::out_of_memory,
                  ".npy: cannot allocate " + std::to_string(layout.data_bytes) + " bytes");
  if (layout.data_bytes != 0) std::memcpy(t.raw(), data, layout.data_bytes);
  if (layout.type == dtype::boolean) {
    // troupe's bool is 0 or 1; numpy writes the same, but a file may hold other bytes.
    uint8_t* b = t.data<uint8_t>();
    for (uint64_t i = 0; i < layout.data_bytes; ++i) b[i] = b[i] != 0;
  }
  return t;
}

/// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with spaces and a newline
/// so that the data starts on a 64-byte boundary, as numpy writes it.
expected<std::string> npy_header_bytes(const tensor& t) {
  if (!t.defined()) return invalid_argument(".npy: cannot write an undefined tensor");
  if (t.device() != device_kind::cpu) return invalid_argument(".npy: tensor is not on the host");
  std::string dict = "{'descr': '";
  dict += dtype_to_numpy(t.type());
  dict += "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.rank(); ++i) {
    if (t.dim(i) < 0)
      return invalid_argument(".npy: negative dimension in " + shape_to_string(t.shape()));
    dict += std::to_string(t.dim(i));
    if (t.rank() == 1 || i + 1 < t.rank()) dict += ",";
    if (i + 1 < t.rank()) dict += " ";
  }
  dict += "), }";
  size_t prefix = 10;
  uint8_t major = 1;
  if (dict.size() + 1 + prefix > 65535) {
    prefix = 12;
    major = 2;
  }
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(npy_magic);
  out += static_cast<char>(major);
  out += '\0';
  const uint32_t len = static_cast<uint32_t>(dict.size());
  out += static_cast<char>(len & 0xFF);
  out += static_cast<char>((len >> 8) & 0xFF);
  if (major == 2) {
    out += static_cast<char>((len >> 16) & 0xFF);
    out += static_cast<char>((len >> 24) & 0xFF);
  }
  out += dict;
  return out;
}

// ---- files --------------------------------------------------------------------------------------

struct file_bytes {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;
};

expected<file_bytes> read_file(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) return not_found("file '" + path + "' does not exist");
  if (!std::filesystem::is_regular_file(st))
    return io_error("'" + path + "' is not a regular file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return io_error("cannot open '" + path + "': " + std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  if (fseeko(f, 0, SEEK_END) != 0) return io_error("cannot seek in '" + path + "'");
  const off_t end = ftello(f);
  if (end < 0 || fseeko(f, 0, SEEK_SET) != 0) return io_error("cannot seek in '" + path + "'");
  file_bytes out;
  out.size = static_cast<size_t>(end);
  out.data.reset(new (std::nothrow) uint8_t[out.size == 0 ? 1 : out.size]);
  if (!out.data) return status(error_code::out_of_memory, "cannot hold '" + path + "' in memory");
  if (out.size != 0 && std::fread(out.data.get(), 1, out.size, f) != out.size)
    return io_error("cannot read '" + path + "'");
  return out;
}

/// A FILE opened for writing that removes the partial file unless committed.
class output_file {
 public:
  static expected<output_file> open(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return io_error("cannot create '" + path + "': " + std::strerror(errno));
    return output_file(path, f);
  }
  output_file(output_file&& o) noexcept
      : path_(std::move(o.path_)), f_(std::exchange(o.f_, nullptr)) {}
  output_file& operator=(output_file&&) = delete;
  ~output_file() {
    if (f_) {
      std::fclose(f_);
      std::remove(path_.c_str());
    }
  }

  status write(const void* data, size_t n) {
    if (n != 0 && std::fwrite(data, 1, n, f_) != n)
      return io_error("cannot write '" + path_ + "': " + std::strerror(errno));
    written_bytes_ += n;
    return status::ok();
  }
  status write(std::string_view s) { return write(s.data(), s.size()); }
  uint64_t written_bytes() const { return written_bytes_; }

  status commit() {
    std::FILE* f = std::exchange(f_, nullptr);
    if (std::fclose(f) != 0) {
      std::remove(path_.c_str());
      return io_error("cannot write '" + path_ + "': " + std::strerror(errno));
    }
    return status::ok();
  }

 private:
  output_file(std::string path, std::FILE* f) : path_(std::move(path)), f_(f) {}
  std::string path_;
  std::FILE* f_;
  uint64_t written_bytes_ = 0;
};

// ---- zlib helpers -------------------------------------------------------------------------------

uint32_t crc32_of(uint32_t crc, const void* data, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), n));
}

/// Raw (headerless) inflate of exactly `out_bytes` bytes.
status inflate_exact(const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes) {
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return internal_error("inflateInit2 failed");
  constexpr size_t chunk = UINT_MAX;
  size_t in_left = in_bytes, out_left = out_bytes;
  zs.next_in = const_cast<Bytef*>(in);
  zs.next_out = out;
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (zs.avail_in == 0 && in_left != 0) {
      zs.avail_in = static_cast<uInt>(std::min(in_left, chunk));
      in_left -= zs.avail_in;
    }
    if (zs.avail_out == 0 && out_left != 0) {
      zs.avail_out = static_cast<uInt>(std::min(out_left, chunk));
      out_left -= zs.avail_out;
    }
    const uInt in_before = zs.avail_in, out_before = zs.avail_out;
    rc = inflate(&zs, Z_NO_FLUSH);
    // Z_BUF_ERROR: no progress possible (input ran out or output is full before the end).
    if (rc == Z_BUF_ERROR || (rc == Z_OK && in_before == zs.avail_in && out_before == zs.avail_out))
      break;
  }
  const bool complete = rc == Z_STREAM_END && zs.avail_out == 0 && out_left == 0;
  inflateEnd(&zs);
  if (!complete) return bad_zip("deflate stream is corrupt or does not match the member's size");
  return status::ok();
}

/// Raw deflate of a header followed by the data, into memory.
expected<std::vector<uint8_t>> deflate_parts(std::string_view header, const void* data, size_t n) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK)
    return internal_error("deflateInit2 failed");
  std::vector<uint8_t> out;
  const std::pair<const uint8_t*, size_t> parts[2] = {
      {reinterpret_cast<const uint8_t*>(header.data()), header.size()},
      {static_cast<const uint8_t*>(data), n}};
  uint8_t buf[1 << 16];
  for (int p = 0; p < 2; ++p) {
    const uint8_t* in = parts[p].first;
    size_t left = parts[p].second;
    const bool last = p == 1;
    do {
      const size_t take = std::min<size_t>(left, UINT_MAX);
      zs.next_in = const_cast<Bytef*>(in);
      zs.avail_in = static_cast<uInt>(take);
      in += take;
      left -= take;
      const int flush = (last && left == 0) ? Z_FINISH : Z_NO_FLUSH;
      int rc;
      do {
        zs.next_out = buf;
        zs.avail_out = sizeof(buf);
        rc = deflate(&zs, flush);
        if (rc == Z_STREAM_ERROR) {
          deflateEnd(&zs);
          return internal_error("deflate failed");
        }
        out.insert(out.end(), buf, buf + (sizeof(buf) - zs.avail_out));
      } while (zs.avail_out == 0);
      if (flush == Z_FINISH && rc != Z_STREAM_END) {
        deflateEnd(&zs);
        return internal_error("deflate did not finish");
      }
    } while (left != 0);
  }
  deflateEnd(&zs);
  return out;
}

// ---- zip reading --------------------------------------------------------------------------------

struct zip_member {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed_bytes = 0;
  uint64_t uncompressed_bytes = 0;
  uint64_t local_offset = 0;
};

struct zip_directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size_bytes = 0;
};

expected<zip_directory> find_central_directory(byte_view in) {
  if (in.size < eocd_bytes) return bad_zip("file too small to be a zip archive");
  // The end record sits at the end, followed only by its comment (at most 65535 bytes).
  const size_t last = in.size - eocd_bytes;
  const size_t first = last > 65535 ? last - 65535 : 0;
  size_t eocd = SIZE_MAX;
  for (size_t pos = last + 1; pos-- > first;) {
    if (load_le<uint32_t>(in.data + pos) != eocd_sig) continue;
    const uint16_t comment = load_le<uint16_t>(in.data + pos + 20);
    if (pos + eocd_bytes + comment <= in.size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX) return bad_zip("no end-of-central-directory record (not a zip archive?)");
  const uint8_t* e = in.data + eocd;
  if (load_le<uint16_t>(e + 4) != 0 || load_le<uint16_t>(e + 6) != 0)
    return unsupported(".npz: multi-disk zip archives are not supported");
  zip_directory dir;
  dir.entries = load_le<uint16_t>(e + 10);
  dir.size_bytes = load_le<uint32_t>(e + 12);
  dir.offset = load_le<uint32_t>(e + 16);

  // A zip64 locator right before the end record points at the zip64 end record, which holds the
  // real values where the classic record says 0xFFFF/0xFFFFFFFF.
  if (eocd >= zip64_locator_bytes &&
      load_le<uint32_t>(in.data + eocd - zip64_locator_bytes) == zip64_locator_sig) {
    const uint64_t z_offset = load_le<uint64_t>(in.data + eocd - zip64_locator_bytes + 8);
    if (!in.fits(z_offset, zip64_eocd_bytes) ||
        load_le<uint32_t>(in.data + z_offset) != zip64_eocd_sig)
      return bad_zip("zip64 end record is missing or out of bounds");
    const uint8_t* z = in.data + z_offset;
    dir.entries = load_le<uint64_t>(z + 32);
    dir.size_bytes = load_le<uint64_t>(z + 40);
    dir.offset = load_le<uint64_t>(z + 48);
  } else if (dir.entries == u16_max || dir.size_bytes == u32_max || dir.offset == u32_max) {
    return bad_zip("end record needs zip64 values but has no zip64 locator");
  }
  if (!in.fits(dir.offset, dir.size_bytes)) return bad_zip("central directory is out of bounds");
  if (dir.entries > dir.size_bytes / central_header_bytes)
    return bad_zip("central directory is too small for its " + std::to_string(dir.entries) +
                   " entries");
  return dir;
}

/// Applies a zip64 extended-information field: it holds, in this order, the values whose
/// classic fields are 0xFFFFFFFF.
status apply_zip64_extra(byte_view extra, zip_member& m, bool sizes_in_header_only) {
  uint64_t pos = 0;
  while (pos + 4 <= extra.size) {
    const uint16_t id = load_le<uint16_t>(extra.data + pos);
    const uint16_t len = load_le<uint16_t>(extra.data + pos + 2);
    pos += 4;
    if (!extra.fits(pos, len)) return bad_zip("extra field of '" + m.name + "' is out of bounds");
    if (id == zip64_extra_id) {
      byte_view f{extra.data + pos, len};
      uint64_t at = 0;
      auto take = [&](uint64_t& field) -> status {
        if (!f.fits(at, 8)) return bad_zip("zip64 field of '" + m.name + "' is too short");
        field = load_le<uint64_t>(f.data + at);
        at += 8;
        return status::ok();
      };
      if (m.uncompressed_bytes == u32_max) TROUPE_RETURN_IF_ERROR(take(m.uncompressed_bytes));
      if (m.compressed_bytes == u32_max) TROUPE_RETURN_IF_ERROR(take(m.compressed_bytes));
      if (!sizes_in_header_only && m.local_offset == u32_max)
        TROUPE_RETURN_IF_ERROR(take(m.local_offset));
    }
    pos += len;
  }
  return status::ok();
}

expected<std::vector<zip_member>> read_central_directory(byte_view in, const zip_directory& dir) {
  std::vector<zip_member> members;
  members.reserve(static_cast<size_t>(dir.entries));
  uint64_t pos = dir.offset;
  const uint64_t end = dir.offset + dir.size_bytes;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (pos > end || end - pos < central_header_bytes ||
        load_le<uint32_t>(in.data + pos) != central_header_sig)
      return bad_zip("central directory entry " + std::to_string(i) + " is corrupt");
    const uint8_t* h = in.data + pos;
    zip_member m;
    m.flags = load_le<uint16_t>(h + 8);
    m.method = load_le<uint16_t>(h + 10);
    m.crc = load_le<uint32_t>(h + 16);
    m.compressed_bytes = load_le<uint32_t>(h + 20);
    m.uncompressed_bytes = load_le<uint32_t>(h + 24);
    const uint16_t name_len = load_le<uint16_t>(h + 28);
    const uint16_t extra_len = load_le<uint16_t>(h + 30);
    const uint16_t comment_len = load_le<uint16_t>(h + 32);
    const uint16_t disk = load_le<uint16_t>(h + 34);
    m.local_offset = load_le<uint32_t>(h + 42);
    const uint64_t variable = uint64_t{name_len} + extra_len + comment_len;
    if (end - pos - central_header_bytes < variable)
      return bad_zip("central directory entry " + std::to_string(i) + " is truncated");
    m.name.assign(reinterpret_cast<const char*>(h + central_header_bytes), name_len);
    TROUPE_RETURN_IF_ERROR(
        apply_zip64_extra(byte_view{h + central_header_bytes + name_len, extra_len}, m, false));
    if (disk != 0 && disk != u16_max)
      return unsupported(".npz: multi-disk zip archives are not supported");
    members.push_back(std::move(m));
    pos += central_header_bytes + variable;
  }
  return members;
}

/// The member's data bytes (compressed form) located through its local header.
expected<byte_view> member_data(byte_view in, const zip_member& m) {
  if (!in.fits(m.local_offset, local_header_bytes) ||
      load_le<uint32_t>(in.data + m.local_offset) != local_header_sig)
    return bad_zip("local header of '" + m.name + "' is missing or out of bounds");
  const uint8_t* h = in.data + m.local_offset;
  const uint64_t start =
      m.local_offset + local_header_bytes + load_le<uint16_t>(h + 26) + load_le<uint16_t>(h + 28);
  // Sizes come from the central directory: they are authoritative even when the local header
  // defers them to a data descriptor (flag bit 3).
  if (!in.fits(start, m.compressed_bytes))
    return bad_zip("data of '" + m.name + "' is out of bounds (truncated archive?)");
  return byte_view{in.data + start, static_cast<size_t>(m.compressed_bytes)};
}

expected<tensor> read_member(byte_view in, const zip_member& m) {
  if (m.flags & 0x1) return unsupported(".npz: member '" + m.name + "' is encrypted");
  auto data = member_data(in, m);
  if (!data) return data.error();
  if (m.method == 0) {
    if (m.compressed_bytes != m.uncompressed_bytes)
      return bad_zip("stored member '" + m.name + "' has different compressed/uncompressed sizes");
    if (crc32_of(0, data->data, data->size) != m.crc)
      return bad_zip("CRC mismatch in member '" + m.name + "'");
    auto t = parse_npy(data->data, data->size);
    if (!t) return t.error().with_context("member '" + m.name + "'");
    return t;
  }
  if (m.method != 8)
    return unsupported(".npz: member '" + m.name + "' uses compression method " +
                       std::to_string(m.method) + " (only stored and deflate are supported)");
  if (m.uncompressed_bytes > max_array_bytes ||
      m.uncompressed_bytes > m.compressed_bytes * max_deflate_ratio + 1024)
    return bad_zip("member '" + m.name + "' claims an impossible uncompressed size");
  const size_t n = static_cast<size_t>(m.uncompressed_bytes);
  std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[n == 0 ? 1 : n]);
  if (!buf) return status(error_code::out_of_memory, "cannot inflate member '" + m.name + "'");
  auto st = inflate_exact(data->data, data->size, buf.get(), n);
  if (!st.is_ok()) return st.with_context("member '" + m.name + "'");
  if (crc32_of(0, buf.get(), n) != m.crc) return bad_zip("CRC mismatch in member '" + m.name + "'");
  auto t = parse_npy(buf.get(), n);
  if (!t) return t.error().with_context("member '" + m.name + "'");
  return t;
}

// ---- zip writing --------------------------------------------------------------------------------

void put16(std::string& s, uint16_t v) {
  s.append(reinterpret_cast<const char*>(&v), 2);
}
void put32(std::string& s, uint32_t v) {
  s.append(reinterpret_cast<const char*>(&v), 4);
}
void put64(std::string& s, uint64_t v) {
  s.append(reinterpret_cast<const char*>(&v), 8);
}

// 1980-01-01 00:00, the zip epoch: output does not depend on the clock.
constexpr uint16_t dos_time = 0;
constexpr uint16_t dos_date = (0 << 9) | (1 << 5) | 1;

struct written_member {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed_bytes = 0;
  uint64_t uncompressed_bytes = 0;
  uint64_t local_offset = 0;
};

bool needs_utf8_flag(const std::string& name) {
  return std::any_of(name.begin(), name.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::string local_header(const written_member& m) {
  const bool zip64 = m.compressed_bytes >= u32_max || m.uncompressed_bytes >= u32_max;
  std::string h;
  put32(h, local_header_sig);
  put16(h, zip64 ? 45 : 20);
  put16(h, needs_utf8_flag(m.name) ? 0x800 : 0);
  put16(h, m.method);
  put16(h, dos_time);
  put16(h, dos_date);
  put32(h, m.crc);
  put32(h, zip64 ? u32_max : static_cast<uint32_t>(m.compressed_bytes));
  put32(h, zip64 ? u32_max : static_cast<uint32_t>(m.uncompressed_bytes));
  put16(h, static_cast<uint16_t>(m.name.size()));
  put16(h, zip64 ? 20 : 0);
  h += m.name;
  if (zip64) {
    put16(h, zip64_extra_id);
    put16(h, 16);
    put64(h, m.uncompressed_bytes);
    put64(h, m.compressed_bytes);
  }
  return h;
}

std::string central_header(const written_member& m) {
  std::string extra;
  if (m.uncompressed_bytes >= u32_max) put64(extra, m.uncompressed_bytes);
  if (m.compressed_bytes >= u32_max) put64(extra, m.compressed_bytes);
  if (m.local_offset >= u32_max) put64(extra, m.local_offset);
  if (!extra.empty()) {
    std::string field;
    put16(field, zip64_extra_id);
    put16(field, static_cast<uint16_t>(extra.size()));
    extra = field + extra;
  }
  std::string h;
  put32(h, central_header_sig);
  put16(h, (3 << 8) | 45);  // made by Unix, spec 4.5
  put16(h, extra.empty() ? 20 : 45);
  put16(h, needs_utf8_flag(m.name) ? 0x800 : 0);
  put16(h, m.method);
  put16(h, dos_time);
  put16(h, dos_date);
  put32(h, m.crc);
  put32(h, static_cast<uint32_t>(std::min<uint64_t>(m.compressed_bytes, u32_max)));
  put32(h, static_cast<uint32_t>(std::min<uint64_t>(m.uncompressed_bytes, u32_max)));
  put16(h, static_cast<uint16_t>(m.name.size()));
  put16(h, static_cast<uint16_t>(extra.size()));
  put16(h, 0);               // comment
  put16(h, 0);               // disk
  put16(h, 0);               // internal attributes
  put32(h, 0100644u << 16);  // external attributes: a regular file, rw-r--r--
  put32(h, static_cast<uint32_t>(std::min<uint64_t>(m.local_offset, u32_max)));
  h += m.name;
  h += extra;
  return h;
}

std::string end_records(uint64_t entries, uint64_t dir_offset, uint64_t dir_bytes) {
  std::string e;
  const bool zip64 = entries >= u16_max || dir_offset >= u32_max || dir_bytes >= u32_max;
  if (zip64) {
    const uint64_t z_offset = dir_offset + dir_bytes;
    put32(e, zip64_eocd_sig);
    put64(e, zip64_eocd_bytes - 12);
    put16(e, (3 << 8) | 45);
    put16(e, 45);
    put32(e, 0);
    put32(e, 0);
    put64(e, entries);
    put64(e, entries);
    put64(e, dir_bytes);
    put64(e, dir_offset);
    put32(e, zip64_locator_sig);
    put32(e, 0);
    put64(e, z_offset);
    put32(e, 1);
  }
  put32(e, eocd_sig);
  put16(e, 0);
  put16(e, 0);
  put16(e, static_cast<uint16_t>(std::min<uint64_t>(entries, u16_max)));
  put16(e, static_cast<uint16_t>(std::min<uint64_t>(entries, u16_max)));
  put32(e, static_cast<uint32_t>(std::min<uint64_t>(dir_bytes, u32_max)));
  put32(e, static_cast<uint32_t>(std::min<uint64_t>(dir_offset, u32_max)));
  put16(e, 0);
  return e;
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------------

expected<tensor> parse_npy(const void* data, size_t size_bytes) {
  const byte_view in{static_cast<const uint8_t*>(data), size_bytes};
  auto layout = parse_npy_layout(in);
  if (!layout) return layout.error();
  return make_tensor(*layout, in.data + layout->data_offset);
}

expected<std::vector<uint8_t>> serialize_npy(const tensor& t) {
  auto header = npy_header_bytes(t);
  if (!header) return header.error();
  std::vector<uint8_t> out(header->begin(), header->end());
  const auto* p = static_cast<const uint8_t*>(t.raw());
  if (t.bytes() != 0) out.insert(out.end(), p, p + t.bytes());
  return out;
}

expected<tensor> read_npy(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes) return bytes.error();
  auto t = parse_npy(bytes->data.get(), bytes->size);
  if (!t) return t.error().with_context("reading '" + path + "'");
  return t;
}

status write_npy(const std::string& path, const tensor& t) {
  auto header = npy_header_bytes(t);
  if (!header) return header.error();
  auto out = output_file::open(path);
  if (!out) return out.error();
  TROUPE_RETURN_IF_ERROR(out->write(*header));
  TROUPE_RETURN_IF_ERROR(out->write(t.raw(), t.bytes()));
  return out->commit();
}

expected<named_tensors> parse_npz(const void* data, size_t size_bytes) {
  const byte_view in{static_cast<const uint8_t*>(data), size_bytes};
  auto dir = find_central_directory(in);
  if (!dir) return dir.error();
  auto members = read_central_directory(in, *dir);
  if (!members) return members.error();
  named_tensors out;
  std::set<std::string> seen;
  for (const auto& m : *members) {
    // Directory entries carry no array.
    if (!m.name.empty() && m.name.back() == '/' && m.uncompressed_bytes == 0) continue;
    auto t = read_member(in, m);
    if (!t) return t.error();
    std::string name = m.name;
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, ".npy") == 0)
      name.resize(name.size() - 4);
    if (!seen.insert(name).second) return bad_zip("array '" + name + "' appears twice");
    out.emplace_back(std::move(name), std::move(*t));
  }
  return out;
}

expected<named_tensors> read_npz(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes) return bytes.error();
  auto arrays = parse_npz(bytes->data.get(), bytes->size);
  if (!arrays) return arrays.error().with_context("reading '" + path + "'");
  return arrays;
}

status write_npz(const std::string& path, const named_tensors& tensors, bool compress) {
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) return invalid_argument(".npz: an array has an empty name");
    if (name.size() > 65535 - 4) return invalid_argument(".npz: array name too long");
    if (!names.insert(name).second)
      return invalid_argument(".npz: array '" + name + "' given twice");
  }
  auto out = output_file::open(path);
  if (!out) return out.error();
  std::vector<written_member> written;
  written.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    auto header = npy_header_bytes(t);
    if (!header) return header.error().with_context("array '" + name + "'");
    written_member m;
    m.name = name + ".npy";
    m.local_offset = out->written_bytes();
    m.uncompressed_bytes = header->size() + t.bytes();
    m.crc = crc32_of(crc32_of(0, header->data(), header->size()), t.raw(), t.bytes());
    if (compress) {
      auto packed = deflate_parts(*header, t.raw(), t.bytes());
      if (!packed) return packed.error();
      m.method = 8;
      m.compressed_bytes = packed->size();
      TROUPE_RETURN_IF_ERROR(out->write(local_header(m)));
      TROUPE_RETURN_IF_ERROR(out->write(packed->data(), packed->size()));
    } else {
      m.method = 0;
      m.compressed_bytes = m.uncompressed_bytes;
      TROUPE_RETURN_IF_ERROR(out->write(local_header(m)));
      TROUPE_RETURN_IF_ERROR(out->write(*header));
      TROUPE_RETURN_IF_ERROR(out->write(t.raw(), t.bytes()));
    }
    written.push_back(std::move(m));
  }
  const uint64_t dir_offset = out->written_bytes();
  for (const auto& m : written) TROUPE_RETURN_IF_ERROR(out->write(central_header(m)));
  const uint64_t dir_bytes = out->written_bytes() - dir_offset;
  TROUPE_RETURN_IF_ERROR(out->write(end_records(written.size(), dir_offset, dir_bytes)));
  return out->commit();
}

}  // namespace troupe::tools
