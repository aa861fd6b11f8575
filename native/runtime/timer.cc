#include "timer.h"

#include "error.h"

#if KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace kiln {

#if KILN_WITH_CUDA
static void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    fail("ERR_CUDA", std::string(what) + ": " + cudaGetErrorString(status));
  }
}
#endif

TimerMark::TimerMark(Device device) : device_(device) {
#if KILN_WITH_CUDA
  if (device.is_cuda()) {
    cuda_set_device(device.index);
    cudaEvent_t event;
    check_cuda(cudaEventCreate(&event), "cudaEventCreate");
    event_ = event;
  }
#else
  if (device.is_cuda()) fail("ERR_NO_CUDA", "kiln was built without CUDA");
#endif
}

TimerMark::~TimerMark() {
#if KILN_WITH_CUDA
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

void TimerMark::record() {
#if KILN_WITH_CUDA
  if (device_.is_cuda()) {
    cuda_set_device(device_.index);
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(cuda_stream(device_.index))),
               "cudaEventRecord");
    recorded_ = true;
    return;
  }
#endif
  cpu_time_ = std::chrono::steady_clock::now();
  recorded_ = true;
}

double TimerMark::elapsed_since(const TimerMark& start) const {
  check(recorded_ && start.recorded_, "ERR_ARG", "both timer marks must be recorded");
  check(device_ == start.device_, "ERR_DEVICE", "timer marks are on different devices");
#if KILN_WITH_CUDA
  if (device_.is_cuda()) {
    check_cuda(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "cudaEventSynchronize");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_), static_cast<cudaEvent_t>(event_)),
               "cudaEventElapsedTime");
    return ms;
  }
#endif
  return std::chrono::duration<double, std::milli>(cpu_time_ - start.cpu_time_).count();
}

}  // namespace kiln
