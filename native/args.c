/* Argument and result helpers. The binding is internal and TypeScript validates every argument first,
 * so a wrong type here is a bug in the library: it throws a plain Error rather than returning errno. */
#include "addon.h"

#include <errno.h>
#include <string.h>

napi_value throw_status(napi_env env) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return NULL;
  napi_get_last_error_info(env, &info);
  napi_throw_error(env, "ERR_UFFD_BINDING",
                   info && info->error_message ? info->error_message : "userfaultfd binding: N-API call failed");
  return NULL;
}

napi_value throw_usage(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_UFFD_BINDING", message);
  return NULL;
}

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    throw_usage(env, "userfaultfd binding: too few arguments");
    return false;
  }
  return true;
}

bool arg_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) == napi_ok) return true;
  throw_usage(env, "userfaultfd binding: expected a number");
  return false;
}

bool arg_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) == napi_ok) return true;
  throw_usage(env, "userfaultfd binding: expected a number");
  return false;
}

bool arg_u64(napi_env env, napi_value v, uint64_t *out) {
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, v, out, &lossless) == napi_ok && lossless) return true;
  throw_usage(env, "userfaultfd binding: expected a BigInt in the u64 range");
  return false;
}

bool arg_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count, offset;
    napi_value ab;
    if (napi_get_typedarray_info(env, v, &type, &count, data, &ab, &offset) != napi_ok) return false;
    size_t elem = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: elem = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
      default: elem = 1;
    }
    *len = count * elem;
    return true;
  }
  if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    napi_value ab;
    size_t offset;
    return napi_get_dataview_info(env, v, len, data, &ab, &offset) == napi_ok;
  }
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    return napi_get_arraybuffer_info(env, v, data, len) == napi_ok;
  }
  throw_usage(env, "userfaultfd binding: expected an ArrayBufferView or ArrayBuffer");
  return false;
}

bool arg_cstring(napi_env env, napi_value v, char *buf, size_t size, int *err) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_usage(env, "userfaultfd binding: expected a string");
    return false;
  }
  *err = 0;
  if (len >= size) {
    *err = -ENAMETOOLONG;
    return true;
  }
  size_t copied = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &copied) != napi_ok) {
    throw_status(env);
    return false;
  }
  if (copied != len || strlen(buf) != len) *err = -EINVAL;
  return true;
}

bool arg_handle(napi_env env, napi_value v, const napi_type_tag *tag, const char *what, void **out) {
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, v, &type) == napi_ok && type == napi_external &&
      napi_check_object_type_tag(env, v, tag, &tagged) == napi_ok && tagged &&
      napi_get_value_external(env, v, out) == napi_ok)
    return true;
  throw_usage(env, what);
  return false;
}

napi_value make_i32(napi_env env, int32_t v) {
  napi_value out = NULL;
  if (napi_create_int32(env, v, &out) != napi_ok) return throw_status(env);
  return out;
}

napi_value make_i64(napi_env env, int64_t v) {
  napi_value out = NULL;
  if (napi_create_int64(env, v, &out) != napi_ok) return throw_status(env);
  return out;
}

napi_value make_u64(napi_env env, uint64_t v) {
  napi_value out = NULL;
  if (napi_create_bigint_uint64(env, v, &out) != napi_ok) return throw_status(env);
  return out;
}

napi_value make_neg_errno(napi_env env, int err) { return make_i32(env, -err); }
