// Binding for attention, RoPE and the paged KV cache (ops/attention.h): converts the dims object
// once, validates before enqueueing, allocates CUDA workspaces from the caching allocator.
#include "../ops/attention.h"
#include "../ops/cpu/attention.h"
#include "binding.h"
#include "validate_calls.h"
#if KILN_WITH_CUDA
#include <cuda_runtime.h>

#include "../ops/cuda/attention/attention_cuda.h"
#endif

namespace kiln::binding {
namespace {

int64_t dim(const Napi::Object& o, const char* name, int64_t min_value = 0) { return field_int(o, name, "attention dims", min_value); }
double number(const Napi::Object& o, const char* name) { return field_number(o, name, "attention dims"); }
bool flag(const Napi::Object& o, const char* name) { return field_bool(o, name, "attention dims"); }
Napi::Object dims_arg(const Napi::CallbackInfo& info, size_t i) { return arg_object(info, i, "dims"); }

void same_device(std::initializer_list<const TensorRef*> tensors) {
  const TensorRef* first = *tensors.begin();
  for (const TensorRef* t : tensors) require_same_device(*t, *first, "tensor", "the first tensor");
}

DType lse_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Scratch from the caching allocator; the task keeps it alive until its kernels are enqueued,
// and stream order makes the block's later reuse safe.
std::shared_ptr<Storage> workspace(Device device, size_t bytes) {
  return bytes ? Storage::allocate(device, bytes) : nullptr;
}

// attentionForward(out, lse, q, k, v, dims)
Napi::Value attention_forward(const Napi::CallbackInfo& info) {
  Napi::Object d = dims_arg(info, 5);
  AttentionParams p;
  p.B = dim(d, "B"), p.Tq = dim(d, "Tq"), p.Tk = dim(d, "Tk"), p.Hq = dim(d, "Hq", 1), p.Hkv = dim(d, "Hkv", 1), p.D = dim(d, "D", 1);
  p.scale = float(number(d, "scale"));
  p.causal = flag(d, "causal");
  bool reference = flag(d, "reference");
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef lse = arg_tensor(info, 1, "lse");
  TensorRef q = arg_tensor(info, 2, "q");
  TensorRef k = arg_tensor(info, 3, "k");
  TensorRef v = arg_tensor(info, 4, "v");
  same_device({&q, &k, &v, &out, &lse});
  p.dtype = q.dtype();
  for (auto* t : {&k, &v, &out}) require_dtype(*t, p.dtype, "attention tensor");
  require_dtype(lse, lse_dtype(p.dtype), "lse");
  require_numel(q, checked_product({p.B, p.Tq, p.Hq, p.D}), "q");
  require_numel(k, checked_product({p.B, p.Tk, p.Hkv, p.D}), "k");
  require_numel(v, checked_product({p.B, p.Tk, p.Hkv, p.D}), "v");
  require_numel(out, checked_product({p.B, p.Tq, p.Hq, p.D}), "out");
  require_numel(lse, checked_product({p.B, p.Hq, p.Tq}), "lse");
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.out = out.data(), p.lse = lse.data();
  Device device = q.device();
  if (device.is_cuda() && reference) fail("ERR_ARG", "the reference attention runs on the CPU only");
  validate_attention_forward(p, device);
  run_on(device, {out.storage(), lse.storage(), q.storage(), k.storage(), v.storage()}, [p, device, reference](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return attention_forward_cuda(p, static_cast<cudaStream_t>(stream));
#endif
    (void)stream;
    reference ? attention_forward_reference_cpu(p) : attention_forward_cpu(p);
  });
  return info.Env().Undefined();
}

// attentionBackward(dq, dk, dv, q, k, v, out, lse, dout, dims)
Napi::Value attention_backward(const Napi::CallbackInfo& info) {
  Napi::Object d = dims_arg(info, 9);
  AttentionBackwardParams p;
  p.B = dim(d, "B"), p.Tq = dim(d, "Tq"), p.Tk = dim(d, "Tk"), p.Hq = dim(d, "Hq", 1), p.Hkv = dim(d, "Hkv", 1), p.D = dim(d, "D", 1);
  p.scale = float(number(d, "scale"));
  p.causal = flag(d, "causal");
  bool reference = flag(d, "reference");
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef dq = arg_tensor(info, 0, "dq");
  TensorRef dk = arg_tensor(info, 1, "dk");
  TensorRef dv = arg_tensor(info, 2, "dv");
  TensorRef q = arg_tensor(info, 3, "q");
  TensorRef k = arg_tensor(info, 4, "k");
  TensorRef v = arg_tensor(info, 5, "v");
  TensorRef out = arg_tensor(info, 6, "out");
  TensorRef lse = arg_tensor(info, 7, "lse");
  TensorRef dout = arg_tensor(info, 8, "dout");
  same_device({&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv});
  p.dtype = q.dtype();
  for (auto* t : {&k, &v, &out, &dout, &dq, &dk, &dv}) require_dtype(*t, p.dtype, "attention tensor");
  require_dtype(lse, lse_dtype(p.dtype), "lse");
  int64_t q_numel = checked_product({p.B, p.Tq, p.Hq, p.D}), kv_numel = checked_product({p.B, p.Tk, p.Hkv, p.D});
  for (auto* t : {&q, &out, &dout, &dq}) require_numel(*t, q_numel, "query-shaped tensor");
  for (auto* t : {&k, &v, &dk, &dv}) require_numel(*t, kv_numel, "key-shaped tensor");
  require_numel(lse, checked_product({p.B, p.Hq, p.Tq}), "lse");
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.out = out.data(), p.lse = lse.data(), p.dout = dout.data();
  p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
  Device device = q.device();
  if (device.is_cuda() && reference) fail("ERR_ARG", "the reference attention runs on the CPU only");
  std::vector<std::shared_ptr<Storage>> keep{dq.storage(), dk.storage(), dv.storage(), q.storage(), k.storage(),
                                             v.storage(), out.storage(), lse.storage(), dout.storage()};
#if KILN_WITH_CUDA
  if (device.is_cuda()) {
    auto scratch = workspace(device, attention_backward_workspace_bytes(p.B, p.Tq, p.Hq, p.D));
    if (scratch) {
      p.workspace = scratch->data();
      keep.push_back(scratch);
    }
  }
#endif
  validate_attention_backward(p, device);
  run_on(device, std::move(keep), [p, device, reference](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return attention_backward_cuda(p, static_cast<cudaStream_t>(stream));
#endif
    (void)stream;
    reference ? attention_backward_reference_cpu(p) : attention_backward_cpu(p);
  });
  return info.Env().Undefined();
}

// rope(y, x, positions, dims, invFreq?)
Napi::Value rope(const Napi::CallbackInfo& info) {
  Napi::Object d = dims_arg(info, 3);
  RopeParams p;
  p.B = dim(d, "B"), p.T = dim(d, "T"), p.H = dim(d, "H"), p.D = dim(d, "D", 2);
  p.base = float(number(d, "base"));
  p.backward = flag(d, "backward");
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef y = arg_tensor(info, 0, "y");
  TensorRef x = arg_tensor(info, 1, "x");
  TensorRef positions = arg_tensor(info, 2, "positions");
  std::optional<TensorRef> inv_freq = arg_optional_tensor(info, 4, "invFreq");
  same_device({&x, &y, &positions});
  if (inv_freq) {
    same_device({&x, &*inv_freq});
    require_dtype(*inv_freq, DType::f32, "invFreq");
    require_numel(*inv_freq, p.D / 2, "invFreq");
    p.inv_freq = static_cast<const float*>(inv_freq->data());
  }
  p.dtype = x.dtype();
  require_dtype(y, p.dtype, "y");
  require_dtype(positions, DType::i32, "positions");
  require_numel(x, checked_product({p.B, p.T, p.H, p.D}), "x");
  require_numel(y, checked_product({p.B, p.T, p.H, p.D}), "y");
  require_numel(positions, checked_product({p.B, p.T}), "positions");
  p.x = x.data(), p.y = y.data(), p.positions = static_cast<const int32_t*>(positions.data());
  Device device = x.device();
  validate_rope(p, device);
  std::vector<std::shared_ptr<Storage>> keep = {y.storage(), x.storage(), positions.storage()};
  if (inv_freq) keep.push_back(inv_freq->storage());
  run_on(device, keep, [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return rope_cuda(p, static_cast<cudaStream_t>(stream));
#endif
    (void)stream;
    rope_cpu(p);
  });
  return info.Env().Undefined();
}

// kvAppend(kCache, vCache, kNew, vNew, blockTable, start, dims)
Napi::Value kv_append(const Napi::CallbackInfo& info) {
  Napi::Object d = dims_arg(info, 6);
  KvAppendParams p;
  p.B = dim(d, "B"), p.Tnew = dim(d, "Tnew"), p.Hkv = dim(d, "Hkv", 1), p.D = dim(d, "D", 1);
  p.block_size = dim(d, "blockSize", 1), p.max_blocks = dim(d, "maxBlocks"), p.num_blocks = dim(d, "numBlocks");
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef k_cache = arg_tensor(info, 0, "kCache");
  TensorRef v_cache = arg_tensor(info, 1, "vCache");
  TensorRef k_new = arg_tensor(info, 2, "kNew");
  TensorRef v_new = arg_tensor(info, 3, "vNew");
  TensorRef table = arg_tensor(info, 4, "blockTable");
  TensorRef start = arg_tensor(info, 5, "start");
  same_device({&k_cache, &v_cache, &k_new, &v_new, &table, &start});
  p.dtype = k_cache.dtype();
  for (auto* t : {&v_cache, &k_new, &v_new}) require_dtype(*t, p.dtype, "cache tensor");
  require_dtype(table, DType::i32, "blockTable");
  require_dtype(start, DType::i32, "start");
  int64_t cache_numel = checked_product({p.num_blocks, p.block_size, p.Hkv, p.D});
  require_numel(k_cache, cache_numel, "kCache");
  require_numel(v_cache, cache_numel, "vCache");
  require_numel(k_new, checked_product({p.B, p.Tnew, p.Hkv, p.D}), "kNew");
  require_numel(v_new, checked_product({p.B, p.Tnew, p.Hkv, p.D}), "vNew");
  require_numel(table, checked_product({p.B, p.max_blocks}), "blockTable");
  require_numel(start, p.B, "start");
  p.k_cache = k_cache.data(), p.v_cache = v_cache.data(), p.k_new = k_new.data(), p.v_new = v_new.data();
  p.block_table = static_cast<const int32_t*>(table.data());
  p.start = static_cast<const int32_t*>(start.data());
  Device device = k_cache.device();
  validate_kv_append(p, device);
  run_on(device, {k_cache.storage(), v_cache.storage(), k_new.storage(), v_new.storage(), table.storage(), start.storage()},
         [p, device](void* stream) {
#if KILN_WITH_CUDA
           if (device.is_cuda()) return kv_append_cuda(p, static_cast<cudaStream_t>(stream));
#endif
           (void)stream;
           kv_append_cpu(p);
         });
  return info.Env().Undefined();
}

// attentionDecode(out, lse, q, kCache, vCache, blockTable, seqLens, dims)
Napi::Value attention_decode(const Napi::CallbackInfo& info) {
  Napi::Object d = dims_arg(info, 7);
  AttentionDecodeParams p;
  p.B = dim(d, "B"), p.Hq = dim(d, "Hq", 1), p.Hkv = dim(d, "Hkv", 1), p.D = dim(d, "D", 1);
  p.block_size = dim(d, "blockSize", 1), p.max_blocks = dim(d, "maxBlocks"), p.num_blocks = dim(d, "numBlocks");
  p.scale = float(number(d, "scale"));
  p.max_seq_len = dim(d, "maxSeqLen", 1);
  bool reference = flag(d, "reference");
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef lse = arg_tensor(info, 1, "lse");
  TensorRef q = arg_tensor(info, 2, "q");
  TensorRef k_cache = arg_tensor(info, 3, "kCache");
  TensorRef v_cache = arg_tensor(info, 4, "vCache");
  TensorRef table = arg_tensor(info, 5, "blockTable");
  TensorRef lens = arg_tensor(info, 6, "seqLens");
  same_device({&out, &lse, &q, &k_cache, &v_cache, &table, &lens});
  p.dtype = q.dtype();
  for (auto* t : {&out, &k_cache, &v_cache}) require_dtype(*t, p.dtype, "decode tensor");
  require_dtype(lse, lse_dtype(p.dtype), "lse");
  require_dtype(table, DType::i32, "blockTable");
  require_dtype(lens, DType::i32, "seqLens");
  int64_t cache_numel = checked_product({p.num_blocks, p.block_size, p.Hkv, p.D});
  require_numel(k_cache, cache_numel, "kCache");
  require_numel(v_cache, cache_numel, "vCache");
  require_numel(q, checked_product({p.B, p.Hq, p.D}), "q");
  require_numel(out, checked_product({p.B, p.Hq, p.D}), "out");
  require_numel(lse, checked_product({p.B, p.Hq}), "lse");
  require_numel(table, checked_product({p.B, p.max_blocks}), "blockTable");
  require_numel(lens, p.B, "seqLens");
  p.q = q.data(), p.k_cache = k_cache.data(), p.v_cache = v_cache.data(), p.out = out.data(), p.lse = lse.data();
  p.block_table = static_cast<const int32_t*>(table.data());
  p.seq_lens = static_cast<const int32_t*>(lens.data());
  Device device = q.device();
  if (device.is_cuda() && reference) fail("ERR_ARG", "the reference decode runs on the CPU only");
  std::vector<std::shared_ptr<Storage>> keep{out.storage(), lse.storage(), q.storage(), k_cache.storage(),
                                             v_cache.storage(), table.storage(), lens.storage()};
#if KILN_WITH_CUDA
  if (device.is_cuda()) {
    auto scratch = workspace(device, attention_decode_workspace_bytes(p.B, p.Hq, p.D, p.max_seq_len));
    if (scratch) {
      p.workspace = scratch->data();
      keep.push_back(scratch);
    }
  }
#endif
  validate_attention_decode(p, device);
  run_on(device, std::move(keep), [p, device, reference](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return attention_decode_cuda(p, static_cast<cudaStream_t>(stream));
#endif
    (void)stream;
    reference ? attention_decode_reference_cpu(p) : attention_decode_cpu(p);
  });
  return info.Env().Undefined();
}

void register_attention(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "attentionForward", attention_forward);
  set_function(env, exports, "attentionBackward", attention_backward);
  set_function(env, exports, "rope", rope);
  set_function(env, exports, "kvAppend", kv_append);
  set_function(env, exports, "attentionDecode", attention_decode);
}

}  // namespace
KILN_REGISTER_BINDING(register_attention);
}  // namespace kiln::binding
