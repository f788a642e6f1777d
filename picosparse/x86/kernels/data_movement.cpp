// Data movement ops between the convs, NCHW. Upsampling: PicoDet's CSP-PAN upsamples 2x before
// a concat; OpenVINO's Interpolate runs in NHWC, so next to the NCHW picosparse ops it costs a
// reorder on each side and drags the following concat into NHWC too (~5% of the model).
// Concat + channel shuffle: ESNet's blocks end in concat(a, b) and a 2-group channel shuffle,
// which OpenVINO runs as a copy of a into the concat plus a shuffle pass; here one pass.
#include <cstring>

#include "api.h"
#include "parallel.h"

namespace picosparse {

void upsample_nearest(const float* x, float* y, int64_t planes, int h, int w, int fh, int fw,
                      int threads) {
    const int64_t wo = (int64_t)w * fw, in_hw = (int64_t)h * w, out_hw = in_hw * fh * fw;
    parallel_ranges(planes, threads, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* xp = x + p * in_hw;
            float* yp = y + p * out_hw;
            for (int r = 0; r < h; ++r) {
                float* row = yp + (int64_t)r * fh * wo;
                const float* src = xp + (int64_t)r * w;
                if (fw == 2) {  // PicoDet's case: GCC vectorises this (unpack lo/hi)
                    for (int c = 0; c < w; ++c) row[2 * c] = row[2 * c + 1] = src[c];
                } else {
                    for (int c = 0; c < w; ++c)
                        for (int f = 0; f < fw; ++f) row[(int64_t)c * fw + f] = src[c];
                }
                for (int f = 1; f < fh; ++f) std::memcpy(row + f * wo, row, sizeof(float) * wo);
            }
        }
    });
}

void concat_shuffle(const float* a, const float* b, float* y, int n, int c, int64_t hw,
                    int threads) {
    parallel_ranges((int64_t)n * c, threads, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {  // plane p of a and of b -> planes 2p and 2p + 1
            const int64_t img = p / c, i = p % c;
            float* yi = y + (img * 2 * c + 2 * i) * hw;
            std::memcpy(yi, a + p * hw, sizeof(float) * hw);
            std::memcpy(yi + hw, b + p * hw, sizeof(float) * hw);
        }
    });
}

}  // namespace picosparse
