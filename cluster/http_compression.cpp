#include "cluster/http_compression.hpp"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

namespace troupe::cluster {
namespace {

std::string lower_trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// q-value of one Accept-Encoding element ("gzip;q=0.5" -> 0.5); 1 without one.
double q_value(std::string_view params) {
  const size_t q = params.find("q=");
  if (q == std::string_view::npos) return 1.0;
  std::string_view v = params.substr(q + 2);
  double x = 1.0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  return ec == std::errc() ? x : 1.0;
}

/// Runs inflate with `window_bits` over `body`.
expected<std::string> inflate_with(std::string_view body, int window_bits, size_t max_bytes,
                                   bool* too_large) {
  z_stream z{};
  if (inflateInit2(&z, window_bits) != Z_OK) return internal_error("zlib inflateInit2 failed");
  std::string out;
  out.resize(std::min<size_t>(std::max<size_t>(body.size() * 4, 4096), max_bytes + 1));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  size_t in_left = body.size();
  size_t produced = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (produced == out.size()) {
      if (out.size() > max_bytes) break;
      out.resize(std::min(out.size() * 2, max_bytes + 1));
    }
    const uInt in_chunk =
        static_cast<uInt>(std::min<size_t>(in_left, std::numeric_limits<uInt>::max()));
    z.avail_in = in_chunk;
    const uInt out_chunk = static_cast<uInt>(
        std::min<size_t>(out.size() - produced, std::numeric_limits<uInt>::max()));
    z.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    z.avail_out = out_chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    in_left -= in_chunk - z.avail_in;
    produced += out_chunk - z.avail_out;
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK && rc != Z_BUF_ERROR) break;
    if (rc == Z_BUF_ERROR && in_left == 0 && z.avail_out > 0) break;  // truncated stream
  }
  inflateEnd(&z);
  if (produced > max_bytes) {
    if (too_large) *too_large = true;
    return invalid_argument("the decompressed request body exceeds the node's " +
                            std::to_string(max_bytes) + "-byte limit");
  }
  if (rc != Z_STREAM_END)
    return invalid_argument("the request body is not a valid compressed stream");
  if (in_left != 0) return invalid_argument("the compressed request body has bytes after its end");
  out.resize(produced);
  return out;
}

}  // namespace

expected<content_coding> parse_content_encoding(std::string_view header) {
  const std::string h = lower_trimmed(header);
  if (h.empty() || h == "identity") return content_coding::identity;
  if (h == "gzip" || h == "x-gzip") return content_coding::gzip;
  if (h == "deflate") return content_coding::deflate;
  return unsupported("Content-Encoding '" + std::string(header) +
                     "' is not supported (gzip, deflate or identity)");
}

content_coding choose_reply_coding(std::string_view accept_encoding) {
  double gzip = 0, deflate = 0;
  std::string_view rest = accept_encoding;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t semi = item.find(';');
    const std::string name = lower_trimmed(item.substr(0, semi));
    const double q = semi == std::string_view::npos ? 1.0 : q_value(item.substr(semi + 1));
    if (name == "gzip" || name == "x-gzip") gzip = std::max(gzip, q);
    if (name == "deflate") deflate = std::max(deflate, q);
  }
  if (gzip > 0 && gzip >= deflate) return content_coding::gzip;
  if (deflate > 0) return content_coding::deflate;
  return content_coding::identity;
}

std::string_view coding_name(content_coding c) {
  switch (c) {
    case content_coding::gzip:
      return "gzip";
    case content_coding::deflate:
      return "deflate";
    case content_coding::identity:
      break;
  }
  return "identity";
}

expected<std::string> decompress(std::string_view body, content_coding c, size_t max_bytes,
                                 bool* too_large) {
  if (too_large) *too_large = false;
  switch (c) {
    case content_coding::identity:
      if (body.size() > max_bytes) {
        if (too_large) *too_large = true;
        return invalid_argument("the request body exceeds the node's " + std::to_string(max_bytes) +
                                "-byte limit");
      }
      return std::string(body);
    case content_coding::gzip:
      return inflate_with(body, 16 + MAX_WBITS, max_bytes, too_large);
    case content_coding::deflate: {
      // The zlib format (RFC 9110's "deflate"); some clients send a raw deflate stream instead.
      auto z = inflate_with(body, MAX_WBITS, max_bytes, too_large);
      if (z || (too_large && *too_large)) return z;
      return inflate_with(body, -MAX_WBITS, max_bytes, too_large);
    }
  }
  return internal_error("unknown content coding");
}

expected<std::string> compress(std::string_view bytes, content_coding c) {
  if (c == content_coding::identity) return std::string(bytes);
  if (bytes.size() > std::numeric_limits<uInt>::max() / 2)
    return unsupported("a reply this large is sent uncompressed");
  z_stream z{};
  const int window = c == content_coding::gzip ? 16 + MAX_WBITS : MAX_WBITS;
  // Level 1: a reply is compressed on an I/O thread; speed matters more than the last percent.
  if (deflateInit2(&z, 1, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return internal_error("zlib deflateInit2 failed");
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(bytes.size())) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t produced = out.size() - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return internal_error("zlib deflate failed");
  out.resize(produced);
  return out;
}

}  // namespace troupe::cluster
