#include "cluster/content_digest.hpp"

#include <openssl/evp.h>

#include <memory>
#include <vector>

#include "runtime/regular_file.hpp"

namespace troupe::cluster {
namespace {

struct md_ctx_free {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using md_ctx = std::unique_ptr<EVP_MD_CTX, md_ctx_free>;

std::string to_hex(const unsigned char* d, unsigned n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size_t{n} * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = digits[d[i] >> 4];
    out[2 * i + 1] = digits[d[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string sha256_hex(const void* data, size_t bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data, bytes, digest, &n, EVP_sha256(), nullptr);
  return to_hex(digest, n);
}

expected<file_digest> sha256_of_file(const std::string& path) {
  TROUPE_ASSIGN_OR_RETURN(runtime::regular_file f,
                          runtime::regular_file::open(path, "'" + path + "'", error_code::not_found));
  md_ctx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return internal_error("SHA-256: OpenSSL could not start a digest");
  std::vector<unsigned char> chunk(size_t{4} << 20);
  for (uint64_t at = 0; at < f.size();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), f.size() - at));
    TROUPE_RETURN_IF_ERROR(f.read_at(at, chunk.data(), n));
    EVP_DigestUpdate(ctx.get(), chunk.data(), n);
    at += n;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &n);
  return file_digest{to_hex(digest, n), f.size()};
}

}  // namespace troupe::cluster
