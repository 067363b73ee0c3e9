# rng: the workload generator's random stream (xoshiro256**, seeded by splitmix64) and the
# request-stream hash. Only the generator draws; the model never does.


cdef inline uint64_t rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next(wl_gen_t *g) noexcept nogil:
    cdef uint64_t result = rotl(g.s[1] * 5, 7) * 9, t = g.s[1] << 17
    g.s[2] ^= g.s[0]
    g.s[3] ^= g.s[1]
    g.s[1] ^= g.s[2]
    g.s[0] ^= g.s[3]
    g.s[2] ^= t
    g.s[3] = rotl(g.s[3], 45)
    return result


cdef inline double rng_double(wl_gen_t *g) noexcept nogil:
    return (rng_next(g) >> 11) * (1.0 / 9007199254740992.0)


cdef void rng_seed(wl_gen_t *g, uint64_t seed) noexcept nogil:
    cdef int i
    cdef uint64_t z
    for i in range(4):                      # splitmix64
        seed += 0x9E3779B97F4A7C15ULL
        z = seed
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        g.s[i] = z ^ (z >> 31)


cdef inline void hash_mix(wl_gen_t *g, uint64_t v) noexcept nogil:
    g.hash = rotl(g.hash ^ v, 27) * 0x9E3779B97F4A7C15ULL


