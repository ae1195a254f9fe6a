// A thin C layer over torch.distributed's C++ engine (c10d), which libtorch already ships: the
// TCPStore for rendezvous, ProcessGroupGloo (CPU) and ProcessGroupNCCL (CUDA) for collectives. It
// holds no logic of its own beyond turning exceptions into error strings and waiting on each
// collective's Work with the group's timeout.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MOETUNE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "c10d_shim.h"

struct mt_store {
  c10::intrusive_ptr<c10d::Store> store;
  uint16_t port;
};

struct mt_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

namespace {

// c10d's flight recorder (a ring buffer of recent collectives, kept to debug NCCL hangs) is off: with
// several process groups in one process, recording into it crashed (SIGSEGV in
// FlightRecorder::recordWithResetEnabled under ProcessGroupGloo::enqueue, torch 2.11, about one run
// in 20 of tests/collectives.rs). Set before main, when no thread can read the environment; a value
// the operator set is kept.
const bool flight_recorder_off = [] {
  setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  setenv("TORCH_NCCL_TRACE_BUFFER_SIZE", "0", 0);
  return true;
}();

char* copy_message(const char* message) {
  size_t n = std::strlen(message) + 1;
  char* copy = static_cast<char*>(std::malloc(n));
  if (copy != nullptr) std::memcpy(copy, message, n);
  return copy;
}

template <class F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception in c10d");
  }
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0: return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case 1: return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case 2: return c10d::ReduceOp(c10d::ReduceOp::MIN);
    default: throw std::invalid_argument("unknown reduce op");
  }
}

void finish(mt_group* group, const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait(group->timeout)) throw std::runtime_error("collective timed out");
}

// `input`'s row blocks sent to the ranks (input_splits[r] rows to rank r), the blocks received from
// them (output_splits[r] rows from rank r) returned in rank order. A failure (a peer gone, a timeout)
// is rethrown with the prefix "moetune c10d exchange failed", which the runner recognises in a
// backward's error; running out of memory for the received rows is left as it is.
at::Tensor exchange(const c10::intrusive_ptr<c10d::Backend>& backend, std::chrono::milliseconds timeout, const at::Tensor& input, std::vector<int64_t> output_splits, std::vector<int64_t> input_splits) {
  auto in = input.contiguous();
  auto sizes = in.sizes().vec();
  sizes[0] = std::accumulate(output_splits.begin(), output_splits.end(), int64_t{0});
  auto output = at::empty(sizes, in.options());
  c10d::AllToAllOptions options;
  options.timeout = timeout;
  try {
    auto work = backend->alltoall_base(output, in, output_splits, input_splits, options);
    if (!work->wait(timeout)) throw std::runtime_error("collective timed out");
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("moetune c10d exchange failed: ") + e.what());
  }
  return output;
}

// The token exchange of expert parallelism inside the autograd graph: the backward sends each row's
// gradient back to the rank the row came from (the same exchange with the splits swapped). Every
// rank's backward therefore takes part in the exchange too, in the same order as the forward's. The
// graph holds its own reference to the process group, so the backward is sound whatever became of
// the caller's handle.
struct DifferentiableAllToAll : public torch::autograd::Function<DifferentiableAllToAll> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const mt_group* group, std::vector<int64_t> output_splits, std::vector<int64_t> input_splits) {
    auto output = exchange(group->backend, group->timeout, input, output_splits, input_splits);
    ctx->saved_data["backend"] = c10::IValue::make_capsule(group->backend);
    ctx->saved_data["timeout_ms"] = static_cast<int64_t>(group->timeout.count());
    ctx->saved_data["output_splits"] = output_splits;
    ctx->saved_data["input_splits"] = input_splits;
    // What a missing output gradient is replaced by (the exchange must happen on every rank anyway).
    ctx->saved_data["output_like"] = at::empty({0}, output.options());
    ctx->saved_data["output_sizes"] = output.sizes().vec();
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto backend = c10::static_intrusive_pointer_cast<c10d::Backend>(ctx->saved_data["backend"].toCapsule());
    auto timeout = std::chrono::milliseconds(ctx->saved_data["timeout_ms"].toInt());
    auto output_splits = ctx->saved_data["output_splits"].toIntVector();
    auto input_splits = ctx->saved_data["input_splits"].toIntVector();
    auto grad = grads[0].defined() ? grads[0] : at::zeros(ctx->saved_data["output_sizes"].toIntVector(), ctx->saved_data["output_like"].toTensor().options());
    return {exchange(backend, timeout, grad, input_splits, output_splits), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

void mt_free_error(char* error) { std::free(error); }

char* mt_store_new(const char* host, uint16_t port, int is_server, int world_size, int64_t timeout_ms, mt_store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    options.numWorkers = static_cast<std::size_t>(world_size);
    // The server's constructor must return (and report its port) before the others can connect;
    // the process group's own rendezvous waits for every rank.
    options.waitWorkers = false;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    uint16_t bound = store->getPort();
    *out = new mt_store{store, bound};
  });
}

uint16_t mt_store_port(const mt_store* store) { return store->port; }

void mt_store_free(mt_store* store) { delete store; }

int mt_nccl_available(void) {
#ifdef MOETUNE_NCCL
  return 1;
#else
  return 0;
#endif
}

char* mt_group_new(mt_store* store, const char* prefix, int backend, int rank, int size, int64_t timeout_ms, const char* gloo_host, mt_group** out) {
  return guarded([&] {
    auto scoped = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::Backend> group;
    if (backend == 0) {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      std::string host = gloo_host == nullptr ? "" : gloo_host;
      options->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                              : c10d::ProcessGroupGloo::createDeviceForHostname(host));
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(scoped, rank, size, options);
    } else if (backend == 1) {
#ifdef MOETUNE_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(scoped, rank, size, options);
#else
      throw std::runtime_error("this runner was built without NCCL (libtorch without CUDA, or no CUDA headers at build time)");
#endif
    } else {
      throw std::invalid_argument("unknown backend");
    }
    *out = new mt_group{group, timeout};
  });
}

void mt_group_free(mt_group* group) {
  // An orderly shutdown first (NCCL tears down its communicators and watchdog; Gloo does nothing);
  // a failure to shut down must not escape a destructor.
  try {
    group->backend->shutdown();
  } catch (...) {
  }
  delete group;
}

char* mt_all_reduce(mt_group* group, mt_tensor* tensor, int op) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(op);
    options.timeout = group->timeout;
    finish(group, group->backend->allreduce(tensors, options));
  });
}

char* mt_broadcast(mt_group* group, mt_tensor* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    finish(group, group->backend->broadcast(tensors, options));
  });
}

char* mt_all_gather(mt_group* group, mt_tensor* output, mt_tensor* input) {
  return guarded([&] {
    c10d::AllgatherOptions options;
    options.timeout = group->timeout;
    finish(group, group->backend->_allgather_base(*output, *input, options));
  });
}

char* mt_reduce_scatter(mt_group* group, mt_tensor* output, mt_tensor* input, int op) {
  return guarded([&] {
    c10d::ReduceScatterOptions options;
    options.reduceOp = reduce_op(op);
    options.timeout = group->timeout;
    finish(group, group->backend->_reduce_scatter_base(*output, *input, options));
  });
}

char* mt_all_to_all(mt_group* group, mt_tensor* output, mt_tensor* input, const int64_t* output_splits, const int64_t* input_splits, int64_t splits) {
  return guarded([&] {
    std::vector<int64_t> out_splits(output_splits, output_splits + splits);
    std::vector<int64_t> in_splits(input_splits, input_splits + splits);
    c10d::AllToAllOptions options;
    options.timeout = group->timeout;
    finish(group, group->backend->alltoall_base(*output, *input, out_splits, in_splits, options));
  });
}

char* mt_all_to_all_differentiable(mt_group* group, mt_tensor* input, const int64_t* output_splits, const int64_t* input_splits, int64_t splits, mt_tensor** out) {
  return guarded([&] {
    std::vector<int64_t> out_splits(output_splits, output_splits + splits);
    std::vector<int64_t> in_splits(input_splits, input_splits + splits);
    auto output = DifferentiableAllToAll::apply(*input, static_cast<const mt_group*>(group), out_splits, in_splits);
    *out = new at::Tensor(std::move(output));
  });
}

char* mt_barrier(mt_group* group) {
  return guarded([&] {
    c10d::BarrierOptions options;
    options.timeout = group->timeout;
    finish(group, group->backend->barrier(options));
  });
}

char* mt_set_data(mt_tensor* tensor, mt_tensor* data) {
  return guarded([&] { tensor->set_data(*data); });
}

char* mt_take_grad(mt_tensor* tensor, mt_tensor** out) {
  return guarded([&] {
    at::Tensor grad = tensor->mutable_grad();
    tensor->mutable_grad().reset();
    *out = new at::Tensor(std::move(grad));
  });
}

char* mt_accumulate_grad(mt_tensor* tensor, mt_tensor* grad) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    at::Tensor& current = tensor->mutable_grad();
    if (current.defined()) {
      current.add_(*grad);
    } else {
      current = grad->detach().clone(at::MemoryFormat::Contiguous);
    }
  });
}

}  // extern "C"
