// StoreClient (store_client.h): the native side of lib/parallel/store.ts's protocol.
#include "store_client.h"

#include <arpa/inet.h>
#include <endian.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "error.h"

namespace kiln::dist {

StoreClient::StoreClient(const std::string& host, int port, const std::string& token, const std::string& prefix, int64_t timeout_ms)
    : prefix_(prefix) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) fail("ERR_DIST", "cannot resolve the rendezvous store " + host + ": " + gai_strerror(rc));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // rank 0 may not be listening yet: retry until the timeout
  for (;;) {
    fd_ = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd_ >= 0 && connect(fd_, found->ai_addr, found->ai_addrlen) == 0) break;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (std::chrono::steady_clock::now() > deadline) {
      freeaddrinfo(found);
      fail("ERR_DIST", "cannot reach the rendezvous store at " + host + ":" + std::to_string(port) + " within " +
                           std::to_string(timeout_ms) + " ms (is rank 0 running?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  freeaddrinfo(found);
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!token.empty()) {
    try {
      request('A', token, {});
    } catch (...) {
      ::close(fd_);
      fd_ = -1;
      throw;
    }
  }
}

StoreClient::~StoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

void StoreClient::set(const std::string& key, const std::vector<char>& value) { request('S', prefix_ + key, value); }

std::vector<char> StoreClient::get(const std::string& key, int64_t timeout_ms) {
  std::string t = std::to_string(timeout_ms);
  return request('G', prefix_ + key, std::vector<char>(t.begin(), t.end()));
}

void StoreClient::write_all(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (w <= 0) fail("ERR_DIST", "the rendezvous store closed the connection");
    p += w;
    n -= size_t(w);
  }
}

void StoreClient::read_all(void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::recv(fd_, p, n, 0);
    if (r <= 0) fail("ERR_DIST", "the rendezvous store closed the connection (rank 0 gone?)");
    p += r;
    n -= size_t(r);
  }
}

std::vector<char> StoreClient::request(char op, const std::string& key, const std::vector<char>& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  uint32_t kl = htole32(uint32_t(key.size())), vl = htole32(uint32_t(value.size()));
  std::vector<char> frame;
  frame.push_back(op);
  frame.insert(frame.end(), reinterpret_cast<char*>(&kl), reinterpret_cast<char*>(&kl) + 4);
  frame.insert(frame.end(), key.begin(), key.end());
  frame.insert(frame.end(), reinterpret_cast<char*>(&vl), reinterpret_cast<char*>(&vl) + 4);
  frame.insert(frame.end(), value.begin(), value.end());
  write_all(frame.data(), frame.size());
  uint8_t status = 0;
  uint32_t len = 0;
  read_all(&status, 1);
  read_all(&len, 4);
  len = le32toh(len);
  std::vector<char> out(len);
  if (len) read_all(out.data(), len);
  if (status != 0) fail("ERR_DIST", "rendezvous store: " + std::string(out.begin(), out.end()));
  return out;
}

}  // namespace kiln::dist
