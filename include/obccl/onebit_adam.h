/* obccl: 1-bit Adam optimizer helper (C99; no CUDA, no C++). */
#ifndef OBCCL_ONEBIT_ADAM_H_
#define OBCCL_ONEBIT_ADAM_H_

#include <stddef.h>
#include <stdint.h>

#include "obccl/obccl.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct obcclOnebitAdam* obcclOnebitAdam_t;
#define OBCCL_FREEZE_AUTO (-1LL)
#define OBCCL_ONEBIT_ADAM_CONFIG_MAGIC 0x0bada111u

typedef struct {
  size_t size;
  unsigned int magic;
  unsigned int version;
  float lr, beta1, beta2, eps, weightDecay; /* defaults 1e-3, 0.9, 0.999, 1e-8, 0 */
  long long freezeStep; /* full-precision updates before compression; OBCCL_FREEZE_AUTO */
} obcclOnebitAdamConfig_t;

#define OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER                                                    \
  {                                                                                             \
    sizeof(obcclOnebitAdamConfig_t), OBCCL_ONEBIT_ADAM_CONFIG_MAGIC, OBCCL_VERSION_CODE, 1e-3f, \
        0.9f, 0.999f, 1e-8f, 0.0f, OBCCL_FREEZE_AUTO                                            \
  }

typedef enum { obcclStageWarmup = 0, obcclStageCompressed = 1 } obcclOptimStage_t;

OBCCL_API obcclResult_t obcclOnebitAdamCreate(obcclComm_t comm, size_t count,
                                              const obcclOnebitAdamConfig_t* config,
                                              obcclOnebitAdam_t* opt);
OBCCL_API obcclResult_t obcclOnebitAdamSetMomentumMask(obcclOnebitAdam_t opt, const float* mask);
OBCCL_API obcclResult_t obcclOnebitAdamStep(obcclOnebitAdam_t opt, float* params,
                                            const float* localGrads, float lr,
                                            obcclStream_t stream);
OBCCL_API obcclResult_t obcclOnebitAdamGetInfo(obcclOnebitAdam_t opt, long long* step,
                                               obcclOptimStage_t* stage, long long* skippedSteps);
OBCCL_API obcclResult_t obcclOnebitAdamStateSize(obcclOnebitAdam_t opt, size_t* bytes);
OBCCL_API obcclResult_t obcclOnebitAdamSaveState(obcclOnebitAdam_t opt, void* buf, size_t bytes);
OBCCL_API obcclResult_t obcclOnebitAdamLoadState(obcclOnebitAdam_t opt, const void* buf,
                                                 size_t bytes);
OBCCL_API obcclResult_t obcclOnebitAdamDestroy(obcclOnebitAdam_t opt);
/* Zeroes this rank's worker and server error-feedback buffers. Calling it on every rank before
   every step gives compressed momentum without error feedback (an ablation); nothing else
   changes. */
OBCCL_API obcclResult_t obcclOnebitAdamResetErrorFeedback(obcclOnebitAdam_t opt);

#ifdef __cplusplus
}
#endif

#endif /* OBCCL_ONEBIT_ADAM_H_ */
