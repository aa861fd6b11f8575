// Errors thrown by native code. The binding turns them into JS errors with a stable `code`
// that lib/ rethrows as KilnError (lib/errors.ts lists the codes).
#pragma once
#include <stdexcept>
#include <string>

namespace kiln {

class KilnException : public std::runtime_error {
 public:
  KilnException(const char* code, const std::string& message) : std::runtime_error(message), code_(code) {}
  const char* code() const { return code_; }

 private:
  const char* code_;
};

[[noreturn]] inline void fail(const char* code, const std::string& message) { throw KilnException(code, message); }

inline void check(bool ok, const char* code, const std::string& message) {
  if (!ok) fail(code, message);
}

}  // namespace kiln
