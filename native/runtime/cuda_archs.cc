// See cuda_archs.h.
#include "cuda_archs.h"

#include <cctype>
#include <vector>

namespace kiln {

namespace {

struct ArchToken {
  int major = 0, minor = 0;
  char variant = 0;  // 0, 'a' (arch-specific) or 'f' (family)
  bool sass = false, ptx = false;
};

// "90a-real" -> 9.0, 'a', SASS. false for anything that is not NN[a|f][-real|-virtual].
bool parse_token(const std::string& token, ArchToken& out) {
  std::string number = token;
  out.sass = out.ptx = true;
  auto strip = [&](const std::string& suffix) {
    if (number.size() > suffix.size() && number.compare(number.size() - suffix.size(), suffix.size(), suffix) == 0) {
      number.resize(number.size() - suffix.size());
      return true;
    }
    return false;
  };
  if (strip("-real")) out.ptx = false;
  else if (strip("-virtual")) out.sass = false;
  if (!number.empty() && (number.back() == 'a' || number.back() == 'f')) {
    out.variant = number.back();
    number.pop_back();
  }
  if (number.size() < 2 || number.size() > 3) return false;
  for (char c : number) if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  int value = std::stoi(number);
  out.major = value / 10;
  out.minor = value % 10;
  return true;
}

std::string arch_name(const ArchToken& t) {
  std::string name = std::to_string(t.major * 10 + t.minor);
  if (t.variant) name += t.variant;
  return name;
}

// Same major, minor at least the token's: binary compatibility of plain and family SASS.
bool same_major_newer_minor(const ArchToken& t, int major, int minor) { return major == t.major && minor >= t.minor; }

}  // namespace

ArchCoverage cuda_arch_coverage(int major, int minor, const std::string& archs) {
  const std::string cc = std::to_string(major) + "." + std::to_string(minor);
  if (major < 8) return {false, "compute capability " + cc + " is older than kiln's kernels support (8.0 or newer)"};
  std::vector<ArchToken> tokens;
  std::string token;
  for (size_t i = 0; i <= archs.size(); ++i) {
    if (i == archs.size() || archs[i] == ',' || archs[i] == ';' || archs[i] == ' ') {
      if (token == "all" || token == "all-major" || token == "native") return {true, "built with \"" + token + "\""};
      ArchToken parsed;
      if (!token.empty() && parse_token(token, parsed)) tokens.push_back(parsed);
      token.clear();
    } else {
      token += archs[i];
    }
  }
  // Prefer SASS (no JIT at load), the newest that runs, as the driver does; else the newest PTX.
  const ArchToken* best = nullptr;
  for (const ArchToken& t : tokens) {
    if (!t.sass) continue;
    bool runs = t.variant == 'a' ? (major == t.major && minor == t.minor) : same_major_newer_minor(t, major, minor);
    if (runs && (!best || best->minor < t.minor || (best->minor == t.minor && t.variant == 'a'))) best = &t;
  }
  if (best) return {true, "sm_" + arch_name(*best) + " SASS"};
  for (const ArchToken& t : tokens) {
    if (!t.ptx) continue;
    bool runs = t.variant == 'a'   ? (major == t.major && minor == t.minor)
                : t.variant == 'f' ? same_major_newer_minor(t, major, minor)
                                   : (major > t.major || (major == t.major && minor >= t.minor));
    if (runs && (!best || best->major * 10 + best->minor < t.major * 10 + t.minor)) best = &t;
  }
  if (best) return {true, "compute_" + arch_name(*best) + " PTX (JIT-compiled by the driver)"};
  return {false, "no SASS for sm_" + std::to_string(major * 10 + minor) + " and no PTX that compute capability " + cc +
                     " can JIT-compile among " + (archs.empty() ? std::string("(none)") : archs)};
}

}  // namespace kiln
