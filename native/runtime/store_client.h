// Client of the run's rendezvous store (rank 0's Node process, lib/parallel/store.ts), shared by
// Gloo's rendezvous (communicator.cc wraps it as a gloo::rendezvous::Store) and the exchange of
// NCCL's unique id (nccl.h). Plain POSIX sockets: compiled in every build.
//
// Wire protocol, little-endian:
//   request:  u8 op ('A' auth, 'S' set, 'G' get), u32 key length, key, u32 value length, value
//             (for 'G' the value is the timeout in milliseconds as decimal text; the store
//             answers once the key exists or the timeout passed)
//   response: u8 status (0 ok, 1 error), u32 length, value or error text
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::dist {

// The two operations the rendezvous needs; tests substitute an in-process fake.
class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Blocks until the key exists; fails (KilnException ERR_DIST) after timeout_ms.
  virtual std::vector<char> get(const std::string& key, int64_t timeout_ms) = 0;
};

// One blocking TCP connection; every key is prefixed with `prefix`. Connecting retries until
// `timeout_ms` (rank 0 may not be listening yet). Errors are KilnException ERR_DIST.
class StoreClient : public KeyValueStore {
 public:
  StoreClient(const std::string& host, int port, const std::string& token, const std::string& prefix, int64_t timeout_ms);
  ~StoreClient() override;
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const std::vector<char>& value) override;
  std::vector<char> get(const std::string& key, int64_t timeout_ms) override;

 private:
  std::vector<char> request(char op, const std::string& key, const std::vector<char>& value);
  void write_all(const void* data, size_t n);
  void read_all(void* data, size_t n);

  int fd_ = -1;
  std::mutex mutex_;
  std::string prefix_;
};

}  // namespace kiln::dist
