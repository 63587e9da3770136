// Op schemas of the compiled extension `adjust_kernels._C`. Importing the module loads this library,
// which registers the ops as torch.ops.adjust_kernels.*; the kernels register themselves per device
// (CPU: select_sample.cpp, CUDA: select_sample_cuda.cu when it was compiled).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(adjust_kernels, m) {
  m.def(
      "select_sample(Tensor logits, float temperature, str score, int seed, int offset, "
      "int exclude_token=-1) -> (Tensor tokens, Tensor scores)");
}

// The ops go through the dispatcher, not Python bindings: the module only has to exist so that
// `import adjust_kernels._C` loads the library.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                               "Compiled ops of adjust_kernels, registered as torch.ops.adjust_kernels.*", -1,
                               nullptr};
  return PyModule_Create(&module);
}
