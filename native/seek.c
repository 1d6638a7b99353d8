/*
 * vdisk-seek: lseek(2) with SEEK_DATA / SEEK_HOLE for Node, which has neither.
 *
 * Exports one function, seek(fd, offset, whence) -> number, where whence is
 * SEEK_DATA or SEEK_HOLE (also exported). It returns the offset lseek found, or -1
 * when lseek fails with ENXIO (no data at or after `offset`, or `offset` is at or
 * past the end); any other failure throws an Error whose `code` is the errno name.
 * Plain Node-API (node_api.h, NAPI_VERSION 8), so one binary serves every Node
 * version from 12.22 on. Built by scripts/build-native.mjs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

static napi_value fail(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static const char *errno_name(int e) {
  switch (e) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EOVERFLOW: return "EOVERFLOW";
    case ESPIPE: return "ESPIPE";
    case EIO: return "EIO";
    default: return "EIO";
  }
}

static napi_value seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) {
    return fail(env, "E_USAGE", "seek(fd, offset, whence) takes three numbers");
  }
  int32_t fd, whence;
  int64_t offset;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int32(env, argv[2], &whence) != napi_ok) {
    return fail(env, "E_USAGE", "seek(fd, offset, whence) takes three numbers");
  }
  if (fd < 0 || offset < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
    return fail(env, "E_USAGE", "seek: fd and offset must be >= 0, whence SEEK_DATA or SEEK_HOLE");
  }
  off_t r = lseek(fd, (off_t)offset, whence);
  if (r < 0) {
    int e = errno;
    if (e == ENXIO) r = -1;
    else return fail(env, errno_name(e), strerror(e));
  }
  napi_value out;
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, data, hole;
  napi_create_function(env, "seek", NAPI_AUTO_LENGTH, seek, NULL, &fn);
  napi_create_int32(env, SEEK_DATA, &data);
  napi_create_int32(env, SEEK_HOLE, &hole);
  napi_set_named_property(env, exports, "seek", fn);
  napi_set_named_property(env, exports, "SEEK_DATA", data);
  napi_set_named_property(env, exports, "SEEK_HOLE", hole);
  return exports;
}

NAPI_MODULE(vdisk_seek, init)
