// The C interface of the c10d shim (src/ffi.rs declares the same). Every call that can fail
// returns NULL on success or a malloc'd message that the caller frees with mt_free_error; no C++
// exception crosses into Rust. Tensors are tch's (a pointer to an at::Tensor).
#pragma once
#include <stdint.h>

#ifdef __cplusplus
namespace at { class Tensor; }
typedef at::Tensor mt_tensor;
extern "C" {
#else
typedef void mt_tensor;
#endif

typedef struct mt_store mt_store;
typedef struct mt_group mt_group;

void mt_free_error(char* error);

char* mt_store_new(const char* host, uint16_t port, int is_server, int world_size, int64_t timeout_ms, mt_store** out);
uint16_t mt_store_port(const mt_store* store);
void mt_store_free(mt_store* store);

// backend: 0 = Gloo, 1 = NCCL. prefix separates groups sharing one store (one per job attempt).
char* mt_group_new(mt_store* store, const char* prefix, int backend, int rank, int size, int64_t timeout_ms, const char* gloo_host, mt_group** out);
void mt_group_free(mt_group* group);
int mt_nccl_available(void);

// op: 0 = sum, 1 = max, 2 = min.
char* mt_all_reduce(mt_group* group, mt_tensor* tensor, int op);
char* mt_broadcast(mt_group* group, mt_tensor* tensor, int root);
char* mt_all_gather(mt_group* group, mt_tensor* output, mt_tensor* input);
char* mt_reduce_scatter(mt_group* group, mt_tensor* output, mt_tensor* input, int op);
char* mt_all_to_all(mt_group* group, mt_tensor* output, mt_tensor* input, const int64_t* output_splits, const int64_t* input_splits, int64_t splits);
// Like mt_all_to_all into a new tensor (*out, freed by tch), recorded in the autograd graph: the
// backward exchanges the gradient back (every rank must run its backward).
char* mt_all_to_all_differentiable(mt_group* group, mt_tensor* input, const int64_t* output_splits, const int64_t* input_splits, int64_t splits, mt_tensor** out);
char* mt_barrier(mt_group* group);

// Autograd helpers tch lacks, for parameters whose storage comes and goes (fully sharded weights).
// Points `tensor` (a parameter, autograd state kept) at `data`'s storage, shape and strides.
char* mt_set_data(mt_tensor* tensor, mt_tensor* data);
// Moves `tensor`'s accumulated gradient into *out (an undefined tensor when it has none), leaving it
// with none.
char* mt_take_grad(mt_tensor* tensor, mt_tensor** out);
// Adds `grad` to `tensor`'s gradient, or makes a copy of it the gradient when there is none.
char* mt_accumulate_grad(mt_tensor* tensor, mt_tensor* grad);

#ifdef __cplusplus
}
#endif
