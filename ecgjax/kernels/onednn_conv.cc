// 2D convolution on CPU through oneDNN, as XLA FFI handlers: forward, input gradient, kernel gradient.
//
// Why: XLA:CPU's convolution is within 10% of oneDNN's forward for wide layers, but 2-6x slower for
// the kernel gradient and for layers with few input channels (see ecgjax/kernels/conv.py). oneDNN
// is the library TensorFlow itself runs on CPU. Layouts are the ones JAX uses: activations NHWC,
// kernels HWIO (grouped: (KH, KW, C_in / groups, C_out)), float32.
//
// Each handler builds (once per shape, then cached) a oneDNN primitive that reads and writes the
// NHWC activations in place; only the small kernel is reordered to the primitive's own layout.
// Calls are serialized by one mutex: each primitive already uses every core through OpenMP, and two
// concurrent OpenMP teams on the same cores (XLA may run independent thunks in parallel) would slow
// both down.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

struct Geometry {
  int64_t n, h, w, ci, kh, kw, co, oh, ow, groups;
  int64_t sh, sw, pt, pb, pl, pr;

  std::string Key(const char* op) const {
    std::string key(op);
    for (int64_t v : {n, h, w, ci, kh, kw, co, oh, ow, groups, sh, sw, pt, pb, pl, pr}) {
      key += ",";
      key += std::to_string(v);
    }
    return key;
  }
  memory::desc Src() const {  // NHWC data, described in oneDNN's logical NCHW order.
    return memory::desc({n, ci, h, w}, memory::data_type::f32, {h * w * ci, 1, w * ci, ci});
  }
  memory::desc Dst() const {
    return memory::desc({n, co, oh, ow}, memory::data_type::f32, {oh * ow * co, 1, ow * co, co});
  }
  memory::desc Weights() const {  // HWIO, with I = ci / groups.
    const int64_t ig = ci / groups, og = co / groups;
    if (groups == 1) {
      return memory::desc({co, ci, kh, kw}, memory::data_type::f32, {1, co, kw * ci * co, ci * co});
    }
    return memory::desc({groups, og, ig, kh, kw}, memory::data_type::f32,
                        {og, 1, co, kw * ig * co, ig * co});
  }
  memory::desc AnyWeights() const {
    if (groups == 1) return memory::desc({co, ci, kh, kw}, memory::data_type::f32, memory::format_tag::any);
    return memory::desc({groups, co / groups, ci / groups, kh, kw}, memory::data_type::f32,
                        memory::format_tag::any);
  }
  memory::dims Strides() const { return {sh, sw}; }
  memory::dims PadL() const { return {pt, pl}; }
  memory::dims PadR() const { return {pb, pr}; }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex& Mutex() {
  static std::mutex mutex;
  return mutex;
}

// A growing 64-byte aligned buffer, reused across calls (callers hold Mutex()).
struct Scratch {
  void* data = nullptr;
  size_t size = 0;
  void* Get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 4095) / 4096 * 4096;
      data = std::aligned_alloc(64, size);
    }
    return data;
  }
};

dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g, dnnl::prop_kind kind) {
  dnnl::convolution_forward::desc desc(kind, dnnl::algorithm::convolution_direct, g.Src(),
                                       g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(), g.PadR());
  return dnnl::convolution_forward::primitive_desc(desc, Attr(), Engine());
}

struct Cached {
  dnnl::primitive primitive;
  memory::desc weights;  // the primitive's own kernel layout
  memory::desc scratchpad;
  std::string impl;
};

std::unordered_map<std::string, Cached>& Cache() {
  static std::unordered_map<std::string, Cached> cache;
  return cache;
}

Cached& Lookup(const Geometry& g, int op) {
  static const char* kNames[] = {"fwd", "bwd_data", "bwd_weights"};
  std::string key = g.Key(kNames[op]);
  auto it = Cache().find(key);
  if (it != Cache().end()) return it->second;
  Cached c;
  if (op == 0) {
    auto pd = ForwardPd(g, dnnl::prop_kind::forward_inference);
    c = {dnnl::convolution_forward(pd), pd.weights_desc(), pd.scratchpad_desc(), pd.impl_info_str()};
  } else if (op == 1) {
    auto hint = ForwardPd(g, dnnl::prop_kind::forward_training);
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, g.Src(),
                                               g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(),
                                               g.PadR());
    dnnl::convolution_backward_data::primitive_desc pd(desc, Attr(), Engine(), hint);
    c = {dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc(),
         pd.impl_info_str()};
  } else {
    auto hint = ForwardPd(g, dnnl::prop_kind::forward_training);
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, g.Src(),
                                                  g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(),
                                                  g.PadR());
    dnnl::convolution_backward_weights::primitive_desc pd(desc, Attr(), Engine(), hint);
    c = {dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(), pd.scratchpad_desc(),
         pd.impl_info_str()};
  }
  return Cache().emplace(key, std::move(c)).first->second;
}

ffi::Error Check(const Geometry& g) {
  if (g.groups < 1 || g.ci % g.groups != 0 || g.co % g.groups != 0) {
    return ffi::Error::InvalidArgument("groups must divide the input and output channels");
  }
  return ffi::Error::Success();
}

template <typename Buf>
Geometry Make(const Buf& x_like, int64_t kh, int64_t kw, int64_t co, const Buf& y_like,
              int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
              int64_t groups) {
  auto xd = x_like.dimensions();
  auto yd = y_like.dimensions();
  return Geometry{xd[0], xd[1], xd[2], xd[3], kh, kw, co, yd[1], yd[2], groups,
                  sh, sw, pt, pb, pl, pr};
}

// Runs op (0 forward, 1 input gradient, 2 kernel gradient). `act` is x (op 0, 2) or dy (op 1);
// `other` is the HWIO kernel (op 0, 1) or dy (op 2); `out` is y, dx or the HWIO kernel gradient.
ffi::Error Run(int op, const Geometry& g, const float* act, const float* other, float* out) {
  if (auto err = Check(g); err.failure()) return err;
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    static Scratch scratch, kernel_buffer;
    Cached& c = Lookup(g, op);
    dnnl::stream stream(Engine());
    memory::desc user_w = g.Weights();
    bool reorder = c.weights != user_w;
    memory scratchpad(c.scratchpad, Engine(), scratch.Get(c.scratchpad.get_size()));
    if (op == 2) {
      memory src(g.Src(), Engine(), const_cast<float*>(act));
      memory diff_dst(g.Dst(), Engine(), const_cast<float*>(other));
      memory user(user_w, Engine(), out);
      memory diff_w = reorder ? memory(c.weights, Engine(), kernel_buffer.Get(c.weights.get_size()))
                              : user;
      c.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                                   {DNNL_ARG_DIFF_WEIGHTS, diff_w},
                                   {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (reorder) dnnl::reorder(diff_w, user).execute(stream, diff_w, user);
    } else {
      memory user(user_w, Engine(), const_cast<float*>(other));
      memory w = user;
      if (reorder) {
        w = memory(c.weights, Engine(), kernel_buffer.Get(c.weights.get_size()));
        dnnl::reorder(user, w).execute(stream, user, w);
      }
      if (op == 0) {
        memory src(g.Src(), Engine(), const_cast<float*>(act));
        memory dst(g.Dst(), Engine(), out);
        c.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w},
                                     {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      } else {
        memory diff_dst(g.Dst(), Engine(), const_cast<float*>(act));
        memory diff_src(g.Src(), Engine(), out);
        c.primitive.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, w},
                                     {DNNL_ARG_DIFF_SRC, diff_src},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

ffi::Error ConvForwardImpl(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, int64_t stride_h,
                           int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                           int64_t pad_left, int64_t pad_right, int64_t groups) {
  auto wd = w.dimensions();
  Geometry g = Make(x, wd[0], wd[1], wd[3], *y, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                    pad_right, groups);
  return Run(0, g, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error ConvInputGradImpl(F32 dy, F32 w, ffi::ResultBuffer<ffi::F32> dx, int64_t stride_h,
                             int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                             int64_t pad_left, int64_t pad_right, int64_t groups) {
  auto wd = w.dimensions();
  Geometry g = Make(*dx, wd[0], wd[1], wd[3], dy, stride_h, stride_w, pad_top, pad_bottom,
                    pad_left, pad_right, groups);
  return Run(1, g, dy.typed_data(), w.typed_data(), dx->typed_data());
}

ffi::Error ConvKernelGradImpl(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h,
                              int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                              int64_t pad_left, int64_t pad_right, int64_t groups) {
  auto wd = dw->dimensions();
  Geometry g = Make(x, wd[0], wd[1], wd[3], dy, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                    pad_right, groups);
  return Run(2, g, x.typed_data(), dy.typed_data(), dw->typed_data());
}

}  // namespace

#define ECGJAX_CONV_ATTRS                                                                   \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top")             \
      .Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")     \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(EcgjaxConvForward, ConvForwardImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()
                                  ECGJAX_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(EcgjaxConvInputGrad, ConvInputGradImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()
                                  ECGJAX_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(EcgjaxConvKernelGrad, ConvKernelGradImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()
                                  ECGJAX_CONV_ATTRS);

// For tests and benchmarks: the oneDNN implementation chosen for a shape ("" if none is cached).
extern "C" const char* EcgjaxConvImplInfo(int op, const int64_t* geometry) {
  static std::string info;
  Geometry g{geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5],
             geometry[6], geometry[7], geometry[8], geometry[9], geometry[10], geometry[11],
             geometry[12], geometry[13], geometry[14], geometry[15]};
  std::lock_guard<std::mutex> lock(Mutex());
  try {
    info = Lookup(g, op).impl;
  } catch (const dnnl::error& e) {
    info = std::string("error: ") + e.what();
  }
  return info.c_str();
}
