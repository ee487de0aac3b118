// Content codings without sockets: gzip and deflate round trips (and what tritonclient's Python
// zlib/gzip produce: the zlib format for "deflate", plus raw deflate streams), the size limit on
// inflating (a small compressed body must not expand past max_message_bytes), corrupt and
// truncated streams, and the choice of a reply coding from Accept-Encoding.

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "cluster/http_compression.hpp"

namespace troupe::cluster {
namespace {

std::string sample(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

TEST(http_compression, round_trips) {
  const std::string text = sample(100000);
  for (content_coding c :
       {content_coding::gzip, content_coding::deflate, content_coding::identity}) {
    auto z = compress(text, c);
    ASSERT_TRUE(z.has_value()) << coding_name(c);
    if (c != content_coding::identity) {
      EXPECT_LT(z->size(), text.size()) << coding_name(c);
    }
    auto back = decompress(*z, c, text.size());
    ASSERT_TRUE(back.has_value()) << coding_name(c) << ": " << back.error().to_string();
    EXPECT_EQ(*back, text);
  }
  auto empty = decompress(*compress("", content_coding::gzip), content_coding::gzip, 10);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(*empty, "");
}

TEST(http_compression, raw_deflate_is_accepted_as_deflate) {
  const std::string text = sample(5000);
  z_stream z{};
  ASSERT_EQ(deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, text.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  ASSERT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  auto back = decompress(out, content_coding::deflate, 1 << 20);
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(*back, text);
}

TEST(http_compression, limits_and_corrupt_streams) {
  const std::string zeros(10 << 20, '\0');  // 10 MiB of zeros: ~10 KiB compressed
  auto z = compress(zeros, content_coding::gzip);
  ASSERT_TRUE(z.has_value());
  bool too_large = false;
  auto capped = decompress(*z, content_coding::gzip, 1 << 20, &too_large);
  ASSERT_FALSE(capped.has_value());
  EXPECT_TRUE(too_large);
  EXPECT_EQ(capped.error().code(), error_code::invalid_argument);
  auto exact = decompress(*z, content_coding::gzip, zeros.size(), &too_large);
  ASSERT_TRUE(exact.has_value()) << "exactly the limit fits";
  EXPECT_FALSE(too_large);

  const std::string text = sample(20000);
  const std::string good = *compress(text, content_coding::gzip);
  for (const std::string& bad :
       {std::string("not compressed at all"), good.substr(0, good.size() / 2), good + "trailing",
        std::string()}) {
    auto r = decompress(bad, content_coding::gzip, 1 << 20, &too_large);
    ASSERT_FALSE(r.has_value()) << bad.size();
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_FALSE(too_large);
  }
  EXPECT_FALSE(decompress(std::string(100, 'x'), content_coding::identity, 10, &too_large));
  EXPECT_TRUE(too_large);
}

TEST(http_compression, header_values) {
  EXPECT_EQ(*parse_content_encoding(""), content_coding::identity);
  EXPECT_EQ(*parse_content_encoding("identity"), content_coding::identity);
  EXPECT_EQ(*parse_content_encoding(" GZIP "), content_coding::gzip);
  EXPECT_EQ(*parse_content_encoding("deflate"), content_coding::deflate);
  auto br = parse_content_encoding("br");
  ASSERT_FALSE(br.has_value());
  EXPECT_EQ(br.error().code(), error_code::unsupported);
  EXPECT_FALSE(parse_content_encoding("gzip, deflate").has_value());

  EXPECT_EQ(choose_reply_coding(""), content_coding::identity);
  EXPECT_EQ(choose_reply_coding("gzip"), content_coding::gzip);
  EXPECT_EQ(choose_reply_coding("deflate"), content_coding::deflate);
  EXPECT_EQ(choose_reply_coding("gzip, deflate, br"), content_coding::gzip);
  EXPECT_EQ(choose_reply_coding("gzip;q=0, deflate"), content_coding::deflate);
  EXPECT_EQ(choose_reply_coding("deflate;q=1.0, gzip;q=0.5"), content_coding::deflate);
  EXPECT_EQ(choose_reply_coding("br, identity"), content_coding::identity);
}

}  // namespace
}  // namespace troupe::cluster
