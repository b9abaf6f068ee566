/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  What differs between the PostgreSQL major versions we build against.
 *
 * The extension targets PostgreSQL 15 and later.  Every difference between
 * versions is bridged here, once, so that no other file needs an #if on
 * PG_VERSION_NUM.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_COMPAT_H
#define RMSG_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "recoverable_msg needs PostgreSQL 15 or later"
#endif

/*
 * table_tuple_update says which indexes the new version needs entries in:
 * a bool until 15, an enum (TU_UpdateIndexes) from 16.
 */
#if PG_VERSION_NUM >= 160000
typedef TU_UpdateIndexes RmsgUpdateIndexes;
#define RmsgIndexesNeedEntries(update_indexes) ((update_indexes) != TU_None)
#else
typedef bool RmsgUpdateIndexes;
#define RmsgIndexesNeedEntries(update_indexes) (update_indexes)
#endif

/* The current process's number among the PGPROCs: a variable of its own from 17. */
#if PG_VERSION_NUM >= 170000
#define RmsgMyProcNumber() (MyProcNumber)
#else
#define RmsgMyProcNumber() (MyProc->pgprocno)
#endif

#endif							/* RMSG_COMPAT_H */
