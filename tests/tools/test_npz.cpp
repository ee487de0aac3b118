// .npy/.npz reading and writing: round trips, archives written by numpy (fixtures made by
// tests/data/npz/make_fixtures.py), and malformed files that must give errors, never crashes.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "tests/test_seed.hpp"
#include "tools/npz.hpp"

namespace troupe::tools {
namespace {

namespace fs = std::filesystem;

const std::string fixture_dir = std::string(TROUPE_SOURCE_DIR) + "/tests/data/npz/";

std::mt19937_64& rng() {
  static std::mt19937_64 r(troupe::testing::test_seed());
  return r;
}

tensor random_bytes_tensor(dtype type, shape_t shape) {
  tensor t = tensor::allocate(type, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.bytes(); ++i) p[i] = static_cast<uint8_t>(rng()());
  if (type == dtype::boolean)
    for (size_t i = 0; i < t.bytes(); ++i) p[i] &= 1;
  return t;
}

bool same_bytes(const tensor& a, const tensor& b) {
  return a.bytes() == b.bytes() &&
         (a.bytes() == 0 || std::memcmp(a.raw(), b.raw(), a.bytes()) == 0);
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class temp_dir {
 public:
  temp_dir() {
    // Unique per process and object: ctest runs each case as its own process, in parallel, and
    // the seeded rng() would give them all the same name.
    static int count = 0;
    path_ = fs::temp_directory_path() /
            ("troupe_npz_" + std::to_string(::getpid()) + "_" + std::to_string(count++));
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

named_tensors random_arrays() {
  named_tensors a;
  a.emplace_back("f32", random_bytes_tensor(dtype::f32, {3, 5, 7}));
  a.emplace_back("f64", random_bytes_tensor(dtype::f64, {4}));
  a.emplace_back("f16", random_bytes_tensor(dtype::f16, {2, 3}));
  a.emplace_back("i64", random_bytes_tensor(dtype::i64, {1, 9}));
  a.emplace_back("i32", random_bytes_tensor(dtype::i32, {6}));
  a.emplace_back("i16", random_bytes_tensor(dtype::i16, {2, 2}));
  a.emplace_back("u16", random_bytes_tensor(dtype::u16, {3}));
  a.emplace_back("i8", random_bytes_tensor(dtype::i8, {5}));
  a.emplace_back("u8", random_bytes_tensor(dtype::u8, {300}));
  a.emplace_back("u32", random_bytes_tensor(dtype::u32, {2}));
  a.emplace_back("u64", random_bytes_tensor(dtype::u64, {2}));
  a.emplace_back("mask", random_bytes_tensor(dtype::boolean, {4, 4}));
  a.emplace_back("scalar", random_bytes_tensor(dtype::f32, {}));
  a.emplace_back("empty", random_bytes_tensor(dtype::f32, {2, 0, 3}));
  a.emplace_back("name with/slash.and dots", random_bytes_tensor(dtype::i64, {2}));
  return a;
}

void expect_same(const named_tensors& got, const named_tensors& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(want[i].first);
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.type(), want[i].second.type());
    EXPECT_EQ(got[i].second.shape(), want[i].second.shape());
    EXPECT_TRUE(same_bytes(got[i].second, want[i].second));
  }
}

TEST(Npz, RoundTripStoredAndCompressed) {
  temp_dir dir;
  const named_tensors arrays = random_arrays();
  for (bool compress : {false, true}) {
    SCOPED_TRACE(compress ? "deflate" : "stored");
    const std::string path = dir.file(compress ? "c.npz" : "s.npz");
    ASSERT_TRUE(write_npz(path, arrays, compress).is_ok());
    auto back = read_npz(path);
    ASSERT_TRUE(back.has_value()) << back.error().to_string();
    expect_same(*back, arrays);
  }
  // Compression pays on compressible data: a zero tensor must shrink.
  named_tensors zeros{{"z", tensor::zeros(dtype::f32, {256, 256})}};
  ASSERT_TRUE(write_npz(dir.file("z.npz"), zeros, true).is_ok());
  EXPECT_LT(fs::file_size(dir.file("z.npz")), 256u * 256u * 4u / 10u);
}

TEST(Npz, EmptyArchive) {
  temp_dir dir;
  ASSERT_TRUE(write_npz(dir.file("e.npz"), {}).is_ok());
  auto back = read_npz(dir.file("e.npz"));
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_TRUE(back->empty());
}

TEST(Npz, Bfloat16IsWrittenAsItsBits) {
  temp_dir dir;
  tensor b = random_bytes_tensor(dtype::bf16, {3, 2});
  ASSERT_TRUE(write_npz(dir.file("b.npz"), {{"b", b}}).is_ok());
  auto back = read_npz(dir.file("b.npz"));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ((*back)[0].second.type(), dtype::u16);
  EXPECT_TRUE(same_bytes((*back)[0].second, b));
}

TEST(Npy, RoundTripEveryRank) {
  temp_dir dir;
  for (const shape_t& shape : {shape_t{}, shape_t{7}, shape_t{2, 3}, shape_t{1, 2, 3, 4, 5}}) {
    tensor t = random_bytes_tensor(dtype::f32, shape);
    auto image = serialize_npy(t);
    ASSERT_TRUE(image.has_value());
    EXPECT_EQ((image->size() - t.bytes()) % 64, 0u) << "data starts on a 64-byte boundary";
    auto parsed = parse_npy(image->data(), image->size());
    ASSERT_TRUE(parsed.has_value()) << parsed.error().to_string();
    EXPECT_EQ(parsed->shape(), shape);
    EXPECT_TRUE(same_bytes(*parsed, t));

    ASSERT_TRUE(write_npy(dir.file("a.npy"), t).is_ok());
    auto read = read_npy(dir.file("a.npy"));
    ASSERT_TRUE(read.has_value());
    EXPECT_EQ(read->shape(), shape);
    EXPECT_TRUE(same_bytes(*read, t));
  }
}

TEST(Npy, LongHeaderUsesVersion2) {
  shape_t shape(25000, 1);  // "1, " per dimension: a header longer than 65535 bytes
  tensor t = random_bytes_tensor(dtype::u8, shape);
  auto image = serialize_npy(t);
  ASSERT_TRUE(image.has_value());
  EXPECT_EQ((*image)[6], 2);
  auto parsed = parse_npy(image->data(), image->size());
  ASSERT_TRUE(parsed.has_value()) << parsed.error().to_string();
  EXPECT_EQ(parsed->shape(), shape);
}

// ---- files written by numpy -------------------------------------------------------------------

/// The arrays make_fixtures.py writes, recomputed here.
void expect_fixture_arrays(const named_tensors& got) {
  ASSERT_EQ(got.size(), 8u);
  const char* names[] = {"f32", "i64", "scalar", "flags", "u8", "f16", "empty", "i32"};
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(got[i].first, names[i]);

  const tensor& f32 = got[0].second;
  ASSERT_EQ(f32.type(), dtype::f32);
  ASSERT_EQ(f32.shape(), (shape_t{3, 4}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(f32.data<float>()[i], (static_cast<float>(i) - 5.5f) / 4);

  const tensor& i64 = got[1].second;
  ASSERT_EQ(i64.type(), dtype::i64);
  ASSERT_EQ(i64.shape(), (shape_t{4}));
  const int64_t want_i64[] = {-3, 0, 7, int64_t{1} << 40};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(i64.data<int64_t>()[i], want_i64[i]);

  const tensor& scalar = got[2].second;
  ASSERT_EQ(scalar.type(), dtype::f64);
  EXPECT_EQ(scalar.rank(), 0u);
  EXPECT_EQ(scalar.data<double>()[0], 2.5);

  const tensor& flags = got[3].second;
  ASSERT_EQ(flags.type(), dtype::boolean);
  ASSERT_EQ(flags.shape(), (shape_t{1, 3}));
  EXPECT_EQ(flags.data<uint8_t>()[0], 1);
  EXPECT_EQ(flags.data<uint8_t>()[1], 0);
  EXPECT_EQ(flags.data<uint8_t>()[2], 1);

  const tensor& u8 = got[4].second;
  ASSERT_EQ(u8.type(), dtype::u8);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(u8.data<uint8_t>()[i], i);

  const tensor& f16 = got[5].second;
  ASSERT_EQ(f16.type(), dtype::f16);
  EXPECT_EQ(half_to_float(f16.data<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(half_to_float(f16.data<uint16_t>()[1]), -2.0f);
  EXPECT_EQ(half_to_float(f16.data<uint16_t>()[2]), 0.5f);

  EXPECT_EQ(got[6].second.shape(), (shape_t{2, 0, 3}));
  EXPECT_EQ(got[6].second.type(), dtype::f32);

  const tensor& i32 = got[7].second;
  ASSERT_EQ(i32.type(), dtype::i32);
  ASSERT_EQ(i32.shape(), (shape_t{1, 2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(i32.data<int32_t>()[i], -i);
}

TEST(NpzNumpyFiles, ReadsEveryArchiveKind) {
  for (const char* name :
       {"numpy_stored.npz", "numpy_deflated.npz", "numpy_descriptors.npz", "zip64_records.npz"}) {
    SCOPED_TRACE(name);
    auto arrays = read_npz(fixture_dir + name);
    ASSERT_TRUE(arrays.has_value()) << arrays.error().to_string();
    expect_fixture_arrays(*arrays);
  }
}

TEST(NpzNumpyFiles, ReadsNpy) {
  auto f32 = read_npy(fixture_dir + "f32_2d.npy");
  ASSERT_TRUE(f32.has_value()) << f32.error().to_string();
  EXPECT_EQ(f32->shape(), (shape_t{3, 4}));
  EXPECT_EQ(f32->data<float>()[5], -0.125f);

  auto scalar = read_npy(fixture_dir + "scalar.npy");
  ASSERT_TRUE(scalar.has_value());
  EXPECT_EQ(scalar->rank(), 0u);
  EXPECT_EQ(scalar->data<double>()[0], 2.5);

  auto f1 = read_npy(fixture_dir + "fortran_1d.npy");
  ASSERT_TRUE(f1.has_value()) << f1.error().to_string();
  EXPECT_EQ(f1->data<float>()[3], 3.0f);
}

TEST(NpzNumpyFiles, WritesTheBytesNumpyWrites) {
  const std::vector<uint8_t> numpy_image = slurp(fixture_dir + "f32_2d.npy");
  tensor t = tensor::allocate(dtype::f32, {3, 4});
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = (static_cast<float>(i) - 5.5f) / 4;
  auto ours = serialize_npy(t);
  ASSERT_TRUE(ours.has_value());
  EXPECT_EQ(*ours, numpy_image);
}

TEST(NpzNumpyFiles, RejectsFortranMatrixAndBigEndian) {
  auto f2 = read_npy(fixture_dir + "fortran_2d.npy");
  ASSERT_FALSE(f2.has_value());
  EXPECT_EQ(f2.error().code(), error_code::unsupported);
  auto be = read_npy(fixture_dir + "big_endian.npy");
  ASSERT_FALSE(be.has_value());
  EXPECT_EQ(be.error().code(), error_code::unsupported);
}

// numpy itself reads what we write, run by the project's Python environment (TROUPE_PYTHON: CMake
// passes Python3_EXECUTABLE, scripts/build.sh's ./.venv/bin/python, where install-deps.sh put
// numpy).
TEST(NpzNumpyFiles, NumpyReadsOurArchives) {
  const std::string python = TROUPE_PYTHON;
  ASSERT_FALSE(python.empty()) << "CMake found no Python3 interpreter";
  ASSERT_EQ(std::system((python + " -c 'import numpy' > /dev/null 2>&1").c_str()), 0)
      << python << " cannot import numpy: run scripts/install-deps.sh";
  temp_dir dir;
  named_tensors arrays;
  tensor f = tensor::allocate(dtype::f32, {2, 3});
  for (int i = 0; i < 6; ++i) f.data<float>()[i] = 0.25f * static_cast<float>(i) - 1;
  arrays.emplace_back("x", f);
  arrays.emplace_back("n", tensor::from_vector<int64_t>({5, -6}, {2}));
  arrays.emplace_back("s", tensor::from_vector<double>({3.5}, {}));
  for (bool compress : {false, true}) {
    const std::string path = dir.file(compress ? "c.npz" : "s.npz");
    ASSERT_TRUE(write_npz(path, arrays, compress).is_ok());
    const std::string cmd =
        python +
        " -c \"import numpy as np, sys; d = np.load(sys.argv[1]); "
        "assert list(d.keys()) == ['x', 'n', 's'], d.keys(); "
        "assert (d['x'] == np.arange(6, dtype=np.float32).reshape(2, 3) * 0.25 - 1).all(); "
        "assert d['n'].dtype == np.int64 and list(d['n']) == [5, -6]; "
        "assert d['s'].shape == () and d['s'] == 3.5\" " +
        path;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << (compress ? "compressed" : "stored");
  }
}

// ---- malformed input --------------------------------------------------------------------------

bool is_input_error(const status& s) {
  return s.code() == error_code::invalid_argument || s.code() == error_code::unsupported;
}

TEST(NpzMalformed, EveryTruncationIsAnError) {
  for (const char* name : {"numpy_stored.npz", "numpy_deflated.npz", "zip64_records.npz"}) {
    const std::vector<uint8_t> bytes = slurp(fixture_dir + name);
    ASSERT_FALSE(bytes.empty());
    for (size_t n = 0; n < bytes.size(); ++n) {
      // Copy so that ASan sees reads past the truncated end.
      std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
      auto r = parse_npz(cut.data(), cut.size());
      ASSERT_FALSE(r.has_value()) << name << " truncated to " << n << " bytes parsed";
      EXPECT_TRUE(is_input_error(r.error())) << r.error().to_string();
    }
  }
  const std::vector<uint8_t> npy = slurp(fixture_dir + "f32_2d.npy");
  for (size_t n = 0; n < npy.size(); ++n) {
    std::vector<uint8_t> cut(npy.begin(), npy.begin() + static_cast<ptrdiff_t>(n));
    auto r = parse_npy(cut.data(), cut.size());
    ASSERT_FALSE(r.has_value()) << "npy truncated to " << n;
    EXPECT_TRUE(is_input_error(r.error())) << r.error().to_string();
  }
}

TEST(NpzMalformed, CorruptBytesNeverCrash) {
  for (const char* name : {"numpy_stored.npz", "numpy_deflated.npz", "numpy_descriptors.npz"}) {
    const std::vector<uint8_t> bytes = slurp(fixture_dir + name);
    for (int trial = 0; trial < 3000; ++trial) {
      std::vector<uint8_t> bad = bytes;
      const int flips = 1 + static_cast<int>(rng()() % 4);
      for (int f = 0; f < flips; ++f) bad[rng()() % bad.size()] = static_cast<uint8_t>(rng()());
      auto r = parse_npz(bad.data(), bad.size());
      if (!r.has_value()) {
        EXPECT_TRUE(is_input_error(r.error())) << r.error().to_string();
      }
    }
  }
}

TEST(NpzMalformed, DataCorruptionFailsTheCrc) {
  std::vector<uint8_t> bytes = slurp(fixture_dir + "numpy_stored.npz");
  // The first member's data starts after its local header (30 bytes + name + extra); flip a
  // byte inside its array data (past the 128-byte .npy header).
  const size_t name_len = bytes[26] | (bytes[27] << 8), extra_len = bytes[28] | (bytes[29] << 8);
  bytes[30 + name_len + extra_len + 130] ^= 0x40;
  auto r = parse_npz(bytes.data(), bytes.size());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), error_code::invalid_argument);
  EXPECT_NE(r.error().message().find("CRC"), std::string::npos) << r.error().message();
}

TEST(NpzMalformed, BadNpyHeaders) {
  auto header = [](const std::string& dict, size_t data_bytes) {
    std::string s("\x93NUMPY\x01\x00", 8);
    s += static_cast<char>(dict.size() & 0xFF);
    s += static_cast<char>(dict.size() >> 8);
    s += dict;
    s.append(data_bytes, '\0');
    return s;
  };
  const std::string ok = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 8);
  ASSERT_TRUE(parse_npy(ok.data(), ok.size()).has_value());
  const std::string cases[] = {
      header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 7),  // short data
      header("{'descr': '<f4', 'fortran_order': False, }", 8),                   // no shape
      header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8),   // negative
      header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", 8),
      header("{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }", 8),
      header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, "
             "99999999999, 99999999999), }",
             8),  // overflow
      header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8),
      header("{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", 8),
      header("['descr']", 8),
      std::string("\x93NUMPY\x09\x00\x10\x00", 10),
      std::string("\x93NUMPY\x01\x00\xff\xff{", 11),  // header length beyond the file
      std::string("PK\x03\x04", 4),
  };
  for (const auto& c : cases) {
    auto r = parse_npy(c.data(), c.size());
    ASSERT_FALSE(r.has_value()) << c;
    EXPECT_TRUE(is_input_error(r.error())) << r.error().to_string();
  }
}

TEST(NpzMalformed, ForgedSizesAreRejected) {
  // Claim a 4 GiB uncompressed size in the central directory of a deflated member: rejected
  // before anything is allocated.
  std::vector<uint8_t> bytes = slurp(fixture_dir + "numpy_deflated.npz");
  size_t eocd = bytes.size() - 22;
  ASSERT_EQ(bytes[eocd], 'P');
  uint32_t cd_offset;
  std::memcpy(&cd_offset, &bytes[eocd + 16], 4);
  const uint32_t huge = 0xFFFFFFF0u;
  std::memcpy(&bytes[cd_offset + 24], &huge, 4);
  auto r = parse_npz(bytes.data(), bytes.size());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), error_code::invalid_argument);
}

TEST(NpzFiles, MissingAndUnwritablePaths) {
  auto missing = read_npz("/nonexistent/dir/x.npz");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found);
  auto dir = read_npz(fixture_dir);
  ASSERT_FALSE(dir.has_value());
  EXPECT_EQ(dir.error().code(), error_code::io_error);
  auto npy = read_npz(fixture_dir + "f32_2d.npy");
  ASSERT_FALSE(npy.has_value());
  EXPECT_EQ(npy.error().code(), error_code::invalid_argument);

  named_tensors one{{"a", tensor::zeros(dtype::f32, {2})}};
  EXPECT_EQ(write_npz("/nonexistent/dir/x.npz", one).code(), error_code::io_error);
  temp_dir tmp;
  named_tensors twice{{"a", tensor::zeros(dtype::f32, {2})}, {"a", tensor::zeros(dtype::f32, {2})}};
  EXPECT_EQ(write_npz(tmp.file("t.npz"), twice).code(), error_code::invalid_argument);
  EXPECT_FALSE(fs::exists(tmp.file("t.npz")));
  named_tensors undefined{{"u", tensor()}};
  EXPECT_EQ(write_npz(tmp.file("u.npz"), undefined).code(), error_code::invalid_argument);
  EXPECT_FALSE(fs::exists(tmp.file("u.npz"))) << "a failed write leaves no partial file";
}

}  // namespace
}  // namespace troupe::tools
