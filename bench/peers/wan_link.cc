// An emulated wide-area link between two network namespaces, for bench/dist_wan.ts on kernels
// without netem (ours: tc knows tbf, not netem, fq or prio). The relay opens one TUN device in
// each namespace and moves every IP packet from one to the other as a link would:
//
//   depart = max(now, link busy until) + bytes·8 / rate     (serialization at the line rate)
//   arrive = depart + delay                                  (one-way propagation delay)
//
// Each direction is its own link. A packet that would wait longer than `queue` in the
// sender's buffer is dropped (a router's tail drop), so TCP sees loss as it would on a real
// bottleneck. The two directions are independent, and packets keep their order.
//
//   g++ -O2 -std=c++17 bench/peers/wan_link.cc -o /tmp/wan_link
//   wan_link NETNS_A NETNS_B IFNAME RATE_BITS_PER_S DELAY_US QUEUE_US
//
// It creates IFNAME in both namespaces (configured by the caller with `ip -n NS addr add ...`),
// prints "ready" once both exist, and relays until stdin closes or it gets SIGTERM; then it
// prints one JSON line of counters (packets and bytes relayed and dropped per direction).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t stop_requested = 0;
void on_signal(int) { stop_requested = 1; }

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "wan_link: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// Opens a TUN device named `name` inside network namespace `netns` (from `ip netns add`): the
// device is created in whatever namespace the thread is in, and the descriptor keeps working
// after the thread moves on.
int open_tun_in(const std::string& netns, const std::string& name) {
  std::string path = "/var/run/netns/" + netns;
  int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) die("open " + path);
  if (setns(ns, CLONE_NEWNET) != 0) die("setns " + netns);
  close(ns);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;  // raw IP packets, no extra header
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) die("TUNSETIFF " + name + " in " + netns);
  return fd;
}

struct Packet {
  int64_t arrive_ns;
  std::vector<uint8_t> bytes;
};

// One direction of the link: packets read from `from` are written to `to` at their arrival time.
struct Direction {
  int from = -1;
  int to = -1;
  int64_t busy_until_ns = 0;
  std::deque<Packet> in_flight;
  uint64_t packets = 0, bytes = 0, dropped = 0, dropped_bytes = 0, write_errors = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: wan_link NETNS_A NETNS_B IFNAME RATE_BITS_PER_S DELAY_US QUEUE_US\n");
    return 2;
  }
  const std::string ns_a = argv[1], ns_b = argv[2], ifname = argv[3];
  const double rate = std::strtod(argv[4], nullptr);
  const int64_t delay_ns = std::strtoll(argv[5], nullptr, 10) * 1000;
  const int64_t queue_ns = std::strtoll(argv[6], nullptr, 10) * 1000;
  if (!(rate > 0) || delay_ns < 0 || queue_ns <= 0) {
    std::fprintf(stderr, "wan_link: the rate must be > 0 bits/s, the delay >= 0 and the queue > 0 microseconds\n");
    return 2;
  }
  const double ns_per_byte = 8e9 / rate;
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);

  int a = open_tun_in(ns_a, ifname);
  int b = open_tun_in(ns_b, ifname);
  std::printf("ready\n");
  std::fflush(stdout);

  Direction dirs[2];
  dirs[0].from = a, dirs[0].to = b;  // a -> b
  dirs[1].from = b, dirs[1].to = a;  // b -> a
  std::vector<uint8_t> buffer(65536);
  while (!stop_requested) {
    int64_t now = now_ns();
    // deliver what has arrived
    int64_t next_ns = -1;
    for (auto& d : dirs) {
      while (!d.in_flight.empty() && d.in_flight.front().arrive_ns <= now) {
        const auto& p = d.in_flight.front().bytes;
        if (write(d.to, p.data(), p.size()) < 0) d.write_errors++;
        d.in_flight.pop_front();
      }
      if (!d.in_flight.empty()) {
        int64_t t = d.in_flight.front().arrive_ns;
        if (next_ns < 0 || t < next_ns) next_ns = t;
      }
    }
    pollfd fds[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {0, POLLIN, 0}};
    timespec timeout{};
    timespec* wait = nullptr;  // nothing in flight: sleep until a packet or stdin
    if (next_ns >= 0) {
      int64_t dt = next_ns > now ? next_ns - now : 0;
      timeout.tv_sec = dt / 1000000000;
      timeout.tv_nsec = dt % 1000000000;
      wait = &timeout;
    }
    int ready = ppoll(fds, 3, wait, nullptr);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die("ppoll");
    }
    if (fds[2].revents & (POLLIN | POLLHUP)) {
      char c;
      if (read(0, &c, 1) <= 0) break;  // the harness closed our stdin: done
    }
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      Direction& d = dirs[i];
      for (;;) {
        ssize_t n = read(d.from, buffer.data(), buffer.size());
        if (n <= 0) break;  // EAGAIN: drained
        int64_t t = now_ns();
        int64_t start = d.busy_until_ns > t ? d.busy_until_ns : t;
        if (start - t > queue_ns) {  // the sender's buffer is full: tail drop
          d.dropped++;
          d.dropped_bytes += uint64_t(n);
          continue;
        }
        int64_t depart = start + int64_t(double(n) * ns_per_byte);
        d.busy_until_ns = depart;
        d.in_flight.push_back({depart + delay_ns, std::vector<uint8_t>(buffer.begin(), buffer.begin() + n)});
        d.packets++;
        d.bytes += uint64_t(n);
      }
    }
  }
  std::printf("{\"aToB\":{\"packets\":%llu,\"bytes\":%llu,\"dropped\":%llu,\"droppedBytes\":%llu,\"writeErrors\":%llu},"
              "\"bToA\":{\"packets\":%llu,\"bytes\":%llu,\"dropped\":%llu,\"droppedBytes\":%llu,\"writeErrors\":%llu}}\n",
              (unsigned long long)dirs[0].packets, (unsigned long long)dirs[0].bytes, (unsigned long long)dirs[0].dropped,
              (unsigned long long)dirs[0].dropped_bytes, (unsigned long long)dirs[0].write_errors, (unsigned long long)dirs[1].packets,
              (unsigned long long)dirs[1].bytes, (unsigned long long)dirs[1].dropped, (unsigned long long)dirs[1].dropped_bytes,
              (unsigned long long)dirs[1].write_errors);
  return 0;
}
