#include "cluster/curve_keys.hpp"

#include <zmq.h>

#include <cstdint>
#include <sstream>

#include "runtime/regular_file.hpp"

namespace troupe::cluster {
namespace {

expected<std::string> read_text(const std::string& path, const char* what) {
  auto f = runtime::regular_file::open(path, std::string(what) + " '" + path + "'",
                                       error_code::not_found);
  if (!f) return f.error();
  return f->read_all(size_t{1} << 20, error_code::invalid_argument);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

expected<std::string> one_key(const std::string& path, const char* what) {
  TROUPE_ASSIGN_OR_RETURN(std::string text, read_text(path, what));
  const std::string key = trim(text.substr(0, text.find('\n')));
  if (!is_curve_key(key))
    return invalid_argument(std::string(what) + " '" + path +
                            "' does not hold a CURVE key (40 Z85 characters on its first line; "
                            "`troupe keygen` writes them)");
  return key;
}

}  // namespace

bool is_curve_key(const std::string& key) {
  if (key.size() != 40) return false;
  uint8_t bytes[32];
  return zmq_z85_decode(bytes, key.c_str()) != nullptr;
}

expected<curve_keypair> generate_curve_keypair() {
  if (!zmq_has("curve")) return unsupported("this libzmq was built without CURVE");
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) return internal_error("zmq_curve_keypair failed");
  return curve_keypair{pub, sec};
}

expected<curve_keypair> read_curve_secret_key(const std::string& path) {
  if (!zmq_has("curve")) return unsupported("this libzmq was built without CURVE");
  TROUPE_ASSIGN_OR_RETURN(std::string secret, one_key(path, "CURVE secret key file"));
  char pub[41];
  if (zmq_curve_public(pub, secret.c_str()) != 0)
    return invalid_argument("CURVE secret key file '" + path + "': not a secret key");
  return curve_keypair{pub, secret};
}

expected<std::string> read_curve_public_key(const std::string& path) {
  return one_key(path, "CURVE public key file");
}

expected<std::set<std::string>> read_curve_authorized_keys(const std::string& path) {
  TROUPE_ASSIGN_OR_RETURN(std::string text, read_text(path, "CURVE authorized keys file"));
  std::set<std::string> keys;
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    const std::string t = trim(line);
    if (t.empty() || t.rfind("# ", 0) == 0 || t == "#") continue;
    const std::string key = t.substr(0, t.find_first_of(" \t"));
    if (!is_curve_key(key))
      return invalid_argument("CURVE authorized keys file '" + path + "', line " +
                              std::to_string(n) + ": not a public key");
    keys.insert(key);
  }
  if (keys.empty())
    return invalid_argument("CURVE authorized keys file '" + path + "' lists no key");
  return keys;
}

}  // namespace troupe::cluster
