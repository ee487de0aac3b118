#pragma once
/// HTTP content codings with zlib, as pure functions: request bodies a client compressed
/// (Content-Encoding: gzip or deflate, as tritonclient sends them) and replies compressed for a
/// client that accepts it (Accept-Encoding). "deflate" is the zlib format (RFC 9110), which is
/// what tritonclient and curl send; a raw deflate stream is accepted on input as well.

#include <cstddef>
#include <string>
#include <string_view>

#include "core/status.hpp"

namespace troupe::cluster {

enum class content_coding { identity, gzip, deflate };

/// The coding a Content-Encoding header names: identity for "" or "identity"; unsupported for
/// anything else (br, zstd, a list of codings).
expected<content_coding> parse_content_encoding(std::string_view header);

/// The coding to answer with for this Accept-Encoding header: gzip, else deflate, else identity
/// (q-values honoured: "gzip;q=0" refuses gzip).
content_coding choose_reply_coding(std::string_view accept_encoding);

std::string_view coding_name(content_coding c);

/// Inflates `body`: invalid_argument when it is not a valid stream of that coding, or when the
/// output would pass `max_bytes` (then `*too_large` is set, when given: callers answer 413).
expected<std::string> decompress(std::string_view body, content_coding c, size_t max_bytes,
                                 bool* too_large = nullptr);

/// Compresses `bytes` (gzip or deflate; identity returns a copy).
expected<std::string> compress(std::string_view bytes, content_coding c);

}  // namespace troupe::cluster
