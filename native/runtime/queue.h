// The op queue. Every op (CPU math, CUDA launches, copies) is a task run in program order on one
// native worker thread, so the Node event loop never blocks on math and CPU and CUDA work stay
// ordered with each other. CPU ops parallelize inside the task (parallel.h); CUDA tasks only
// enqueue kernels on the device's stream and return.
//
// A task that throws records the first error; the next wait (synchronize, toArray) reports and
// clears it, like CUDA's sticky errors. Argument errors are found before enqueueing, in lib/
// and in the binding, so a task failing means a device fault, not a user mistake.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace kiln {

struct TaskError {
  std::string code;  // empty: no error
  std::string message;
};

void enqueue(std::function<void()> task);

// Runs `on_done(error)` on the worker after every task enqueued before it has finished (the
// error is the pending sticky error, cleared by this call). Used for synchronize and reads.
void enqueue_barrier(std::function<void(const TaskError&)> on_done);

// Blocks the calling thread until the queue is empty (tests, shutdown).
void wait_idle();

// Stops the worker after pending tasks (process exit).
void shutdown_queue();

uint64_t tasks_executed();

}  // namespace kiln
