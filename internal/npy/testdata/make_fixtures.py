#!/usr/bin/env python3
"""Regenerate the .npy fixtures used by the Go tests in internal/npy.

Run from this directory with Debian's numpy (apt-get install -y python3-numpy,
numpy 1.24.2 when these were made):

    /usr/bin/python3 make_fixtures.py

The Go tests read the committed files; they never run Python.
"""
import numpy as np

# A 3x4 matrix whose values are exact in float16, so C/Fortran/endianness
# variants can all be checked against the same float32 expectation:
# value(i, j) = i*10 + j + 0.5 (i = row, j = column), negated on odd rows.
def mat(rows, cols):
    a = np.array([[(i * 10 + j + 0.5) * (-1 if i % 2 else 1) for j in range(cols)]
                  for i in range(rows)], dtype=np.float32)
    return a

a = mat(3, 4)
b = mat(5, 3)

np.save("f4_c.npy", a)                                  # '<f4', C order
np.save("f2_c.npy", a.astype("<f2"))                    # '<f2', C order
np.save("f4_fortran.npy", np.asfortranarray(b))         # fortran_order True
np.save("f2_fortran.npy", np.asfortranarray(b.astype("<f2")))
np.save("f4_be.npy", a.astype(">f4"))                   # big-endian
np.save("f2_be_fortran.npy", np.asfortranarray(b.astype(">f2")))
np.save("f4_empty.npy", np.zeros((0, 4), dtype=np.float32))
np.save("f2_empty.npy", np.zeros((0, 4), dtype=np.float16))

with open("f4_v2.npy", "wb") as f:
    np.lib.format.write_array(f, a, version=(2, 0))
with open("f4_v3.npy", "wb") as f:
    np.lib.format.write_array(f, a, version=(3, 0))

# Errors.
np.save("vec_1d.npy", np.arange(3, dtype=np.float32))
np.save("i8.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
np.save("f8.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
np.save("obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
np.save("f4_3d.npy", np.zeros((2, 2, 2), dtype=np.float32))
with open("f4_c.npy", "rb") as f:
    full = f.read()
with open("f4_truncated.npy", "wb") as f:
    f.write(full[:-5])
with open("f4_trailing.npy", "wb") as f:
    f.write(full + b"junk")

# float16 specials, 1 x 12: zeros, smallest/largest subnormal, smallest
# normal, largest finite, infinities, NaN, and a value that overflows.
specials = np.array([[0.0, -0.0, 2.0**-24, -(2.0**-24), 1023 * 2.0**-24,
                      2.0**-14, 65504.0, np.inf, -np.inf, np.nan, 1.0, -2.0]],
                    dtype=np.float32)
np.save("f2_specials.npy", specials.astype("<f2"))

# float32 -> float16 rounding: numpy's conversion (round half to even,
# overflow to inf, gradual underflow) written once as '<f4' and once as '<f2'.
# The Go writer must turn the first into the second byte for byte.
rng = np.random.default_rng(42)
vals = [0.0, -0.0, 1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-11 + 2.0**-20,
        65504.0, 65519.99, 65520.0, 1e9, -1e9, 2.0**-25, 2.0**-25 + 2.0**-40,
        3 * 2.0**-25, 2.0**-26, 2.0**-14 - 2.0**-25, 6.1e-5, 1e-8, np.inf, -np.inf, np.nan]
vals += list(rng.standard_normal(64) * 0.05)        # typical embedding values
vals += list(rng.standard_normal(64) * 1000)
vals += list(np.exp(rng.uniform(-20, 12, 64)) * rng.choice([-1, 1], 64))
r = np.array(vals, dtype=np.float32).reshape(-1, 1)
np.save("round_f4.npy", r)
with np.errstate(over="ignore"):  # 65520 and 1e9 overflow to inf on purpose
    np.save("round_f2.npy", r.astype("<f2"))

# .npz archives as DataComp ships its embeddings (float16 arrays named b32_img, b32_txt,
# l14_img, l14_txt): np.savez stores the members, np.savez_compressed deflates them. The
# arrays are mat() of other shapes and orders, so every member is told apart.
arrays = dict(b32_img=a.astype("<f2"), b32_txt=(-a).astype("<f2"),
              l14_img=np.asfortranarray(mat(3, 6).astype("<f2")), l14_txt=mat(3, 6).astype(">f4"))
np.savez("datacomp_stored.npz", **arrays)
np.savez_compressed("datacomp_deflated.npz", **arrays)
with open("datacomp_stored.npz", "rb") as f:
    full = f.read()
with open("datacomp_truncated.npz", "wb") as f:
    f.write(full[:len(full) // 2])
