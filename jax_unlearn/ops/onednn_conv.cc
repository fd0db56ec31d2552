// 2-D convolutions (forward, input gradient, kernel gradient) through oneDNN, as XLA FFI calls.
//
// Layouts are the ones JAX hands over: input and output NHWC, kernel HWIO, all row-major, so
// oneDNN reads and writes XLA's buffers in place; only the kernel is reordered into oneDNN's
// blocked format (a few hundred KiB). Primitives are built once per shape and cached. Each call
// brings its own scratchpad and reorder buffers. Calls run one at a time: each already uses
// every core through OpenMP, and XLA, which runs independent operations concurrently, would
// otherwise start two OpenMP teams on the same cores (measured: a training step 1.3x slower).
// Built by jax_unlearn/ops/onednn.py on first use.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

using Tag = memory::format_tag;
using Key = std::array<int64_t, 16>;

struct Geometry {
  int64_t n, h, w, c, o, kh, kw, ho, wo, sh, sw, pt, pb, pl, pr;
  memory::desc src() const { return {{n, c, h, w}, memory::data_type::f32, Tag::nhwc}; }
  memory::desc dst() const { return {{n, o, ho, wo}, memory::data_type::f32, Tag::nhwc}; }
  memory::desc weights(Tag tag) const { return {{o, c, kh, kw}, memory::data_type::f32, tag}; }
  Key key(int kind) const { return {kind, n, h, w, c, o, kh, kw, ho, wo, sh, sw, pt, pb, pl, pr}; }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, g.src(),
      g.weights(Tag::any), g.dst(), {g.sh, g.sw}, {g.pt, g.pl}, {g.pb, g.pr}, UserScratchpad());
}

// One cached primitive and its descriptor per (kind, geometry).
struct Entry {
  dnnl::primitive prim;
  memory::desc weights;  // the primitive's kernel format
  memory::desc scratchpad;
};

std::mutex run_mutex;  // held by every call (see above); guards the cache too
std::map<Key, std::shared_ptr<Entry>> cache;

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

std::shared_ptr<Entry> Get(Kind kind, const Geometry& g) {
  auto& slot = cache[g.key(kind)];
  if (!slot) {
    auto fwd = ForwardDesc(g);
    auto attr = UserScratchpad();
    auto any = g.weights(Tag::any);
    if (kind == kForward) {
      slot = std::make_shared<Entry>(Entry{dnnl::convolution_forward(fwd), fwd.weights_desc(),
                                           fwd.scratchpad_desc()});
    } else if (kind == kBackwardData) {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.src(), any, g.dst(), {g.sh, g.sw},
          {g.pt, g.pl}, {g.pb, g.pr}, fwd, attr);
      slot = std::make_shared<Entry>(Entry{dnnl::convolution_backward_data(pd), pd.weights_desc(),
                                           pd.scratchpad_desc()});
    } else {
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.src(), any, g.dst(), {g.sh, g.sw},
          {g.pt, g.pl}, {g.pb, g.pr}, fwd, attr);
      slot = std::make_shared<Entry>(Entry{dnnl::convolution_backward_weights(pd),
                                           pd.diff_weights_desc(), pd.scratchpad_desc()});
    }
  }
  return slot;
}

Geometry Make(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y, ffi::Span<const int64_t> k,
              int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  // x [N, H, W, C], y [N, Ho, Wo, O], k [KH, KW, C, O]
  return {x[0], x[1], x[2], x[3], y[3], k[0], k[1], y[1], y[2], sh, sw, pt, pb, pl, pr};
}

template <typename F>
ffi::Error Guarded(F&& body) {
  std::lock_guard<std::mutex> lock(run_mutex);
  try {
    body();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

// Runs a cached forward or input-gradient primitive: `in` and `out` are NHWC tensors (`in_desc`,
// `out_desc`), `k` the HWIO kernel, reordered into the primitive's format first.
static void RunWithKernel(Kind kind, const Geometry& g, int in_arg, const memory::desc& in_desc,
                          void* in, int out_arg, const memory::desc& out_desc, void* out, void* k) {
  auto e = Get(kind, g);
  dnnl::stream s(Engine());
  memory user_k(g.weights(Tag::hwio), Engine(), k);
  memory prim_k(e->weights, Engine());
  dnnl::reorder(user_k, prim_k).execute(s, user_k, prim_k);
  memory scratch(e->scratchpad, Engine());
  e->prim.execute(s, {{in_arg, memory(in_desc, Engine(), in)},
                      {DNNL_ARG_WEIGHTS, prim_k},
                      {out_arg, memory(out_desc, Engine(), out)},
                      {DNNL_ARG_SCRATCHPAD, scratch}});
  s.wait();
}

// y = conv(x, k)
ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                       ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g = Make(x.dimensions(), y->dimensions(), k.dimensions(), sh, sw, pt, pb, pl, pr);
    RunWithKernel(kForward, g, DNNL_ARG_SRC, g.src(), x.typed_data(), DNNL_ARG_DST, g.dst(),
                  y->typed_data(), k.typed_data());
  });
}

// dx = conv_transpose(dy, k)
ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k,
                            ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g = Make(dx->dimensions(), dy.dimensions(), k.dimensions(), sh, sw, pt, pb, pl, pr);
    RunWithKernel(kBackwardData, g, DNNL_ARG_DIFF_DST, g.dst(), dy.typed_data(),
                  DNNL_ARG_DIFF_SRC, g.src(), dx->typed_data(), k.typed_data());
  });
}

// dk = sum over batch and positions of x patches times dy
ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dk, int64_t sh, int64_t sw, int64_t pt,
                               int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g = Make(x.dimensions(), dy.dimensions(), dk->dimensions(), sh, sw, pt, pb, pl, pr);
    auto e = Get(kBackwardWeights, g);
    dnnl::stream s(Engine());
    memory prim_dk(e->weights, Engine());
    memory scratch(e->scratchpad, Engine());
    e->prim.execute(s, {{DNNL_ARG_SRC, memory(g.src(), Engine(), x.typed_data())},
                        {DNNL_ARG_DIFF_DST, memory(g.dst(), Engine(), dy.typed_data())},
                        {DNNL_ARG_DIFF_WEIGHTS, prim_dk},
                        {DNNL_ARG_SCRATCHPAD, scratch}});
    memory user_dk(g.weights(Tag::hwio), Engine(), dk->typed_data());
    dnnl::reorder(prim_dk, user_dk).execute(s, prim_dk, user_dk);
    s.wait();
  });
}

#define CONV_BINDING                                                                      \
  ffi::Ffi::Bind()                                                                        \
      .Arg<ffi::Buffer<ffi::F32>>()                                                       \
      .Arg<ffi::Buffer<ffi::F32>>()                                                       \
      .Ret<ffi::Buffer<ffi::F32>>()                                                       \
      .Attr<int64_t>("sh")                                                                \
      .Attr<int64_t>("sw")                                                                \
      .Attr<int64_t>("pt")                                                                \
      .Attr<int64_t>("pb")                                                                \
      .Attr<int64_t>("pl")                                                                \
      .Attr<int64_t>("pr")

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, ForwardImpl, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvBackwardData, BackwardDataImpl, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvBackwardWeights, BackwardWeightsImpl, CONV_BINDING);
