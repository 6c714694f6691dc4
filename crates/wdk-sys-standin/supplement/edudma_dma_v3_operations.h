/*
 * edudma's supplement to Debian's mingw-w64 DDK headers, part 2 of 3:
 * the version-2/3 DMA types and the DMA_OPERATIONS members that follow
 * BuildMdlFromScatterGatherList.
 *
 * Written by the edudma project from Microsoft Learn's reference pages
 * ("DMA_OPERATIONS structure (wdm.h)" and the page of each PXXX callback
 * type named below, e.g. "PMAP_TRANSFER_EX callback function (wdm.h)").
 * mingw-w64 declares only the 15 version-1 routines. The build script of
 * the stand-in inserts this header in front of mingw's DMA_OPERATIONS and
 * EDUDMA_DMA_OPERATIONS_V2_V3_MEMBERS at the end of its member list, so the
 * structure has the 39 routine pointers (0x140 bytes on x64) of the WDK.
 */
#pragma once

/* ---- constants (wdm.h) -------------------------------------------------- */
#define DMA_TRANSFER_INFO_VERSION1 1
#define DMA_TRANSFER_INFO_VERSION2 2
#define DMA_ADAPTER_INFO_VERSION1 1
/* DMA_TRANSFER_CONTEXT_SIZE_V1 is 128 bytes on 64-bit Windows. */
#define DMA_TRANSFER_CONTEXT_VERSION1 1
#define DMA_TRANSFER_CONTEXT_SIZE_V1 128
/* AllocateAdapterChannelEx / GetScatterGatherListEx flags. */
#define DMA_SYNCHRONOUS_CALLBACK 0x01
/* GetScatterGatherListEx / BuildScatterGatherListEx flags. */
#define DMA_ZERO_BUFFERS 0x02
/* DMA_ADAPTER_INFO_V1.Flags and the Ex routines' flags. */
#define ADAPTER_INFO_SYNCHRONOUS_CALLBACK 0x0001
#define ADAPTER_INFO_API_BYPASS 0x0002
#define DMA_FAIL_ON_BOUNCE 0x04

/* ---- GetDmaTransferInfo (PGET_DMA_TRANSFER_INFO) ------------------------- */
typedef struct _DMA_TRANSFER_INFO_V1 {
  ULONG MapRegisterCount;
  ULONG ScatterGatherElementCount;
  ULONG ScatterGatherListSize;
} DMA_TRANSFER_INFO_V1, *PDMA_TRANSFER_INFO_V1;

typedef struct _DMA_TRANSFER_INFO_V2 {
  ULONG MapRegisterCount;
  ULONG ScatterGatherElementCount;
  ULONG ScatterGatherListSize;
  ULONG LogicalPageCount;
} DMA_TRANSFER_INFO_V2, *PDMA_TRANSFER_INFO_V2;

typedef struct _DMA_TRANSFER_INFO {
  ULONG Version;
  union {
    DMA_TRANSFER_INFO_V1 V1;
    DMA_TRANSFER_INFO_V2 V2;
  };
} DMA_TRANSFER_INFO, *PDMA_TRANSFER_INFO;

/* ---- GetDmaAdapterInfo (PGET_DMA_ADAPTER_INFO) ---------------------------- */
typedef struct _DMA_ADAPTER_INFO_V1 {
  ULONG ReadDmaCounterAvailable;
  ULONG ScatterGatherLimit;
  ULONG DmaAddressWidth;
  ULONG Flags;
  ULONG MinimumTransferUnit;
} DMA_ADAPTER_INFO_V1, *PDMA_ADAPTER_INFO_V1;

typedef struct _DMA_ADAPTER_INFO_CRASHDUMP {
  DEVICE_DESCRIPTION DeviceDescription;
  SIZE_T DeviceIdSize;
  PVOID DeviceId;
} DMA_ADAPTER_INFO_CRASHDUMP, *PDMA_ADAPTER_INFO_CRASHDUMP;

typedef struct _DMA_ADAPTER_INFO {
  ULONG Version;
  union {
    DMA_ADAPTER_INFO_V1 V1;
    DMA_ADAPTER_INFO_CRASHDUMP Crashdump;
  };
} DMA_ADAPTER_INFO, *PDMA_ADAPTER_INFO;

/* ---- DMA_COMPLETION_ROUTINE (system DMA completion) ----------------------- */
/* DMA_COMPLETION_STATUS: mingw-w64 declares it (as an anonymous enum). */

typedef VOID DMA_COMPLETION_ROUTINE(
  struct _DMA_ADAPTER *DmaAdapter,
  struct _DEVICE_OBJECT *DeviceObject,
  PVOID CompletionContext,
  DMA_COMPLETION_STATUS Status);
typedef DMA_COMPLETION_ROUTINE *PDMA_COMPLETION_ROUTINE;

/* ---- common buffers: opaque types of the newest routines ------------------ */
typedef struct _DMA_COMMON_BUFFER_VECTOR DMA_COMMON_BUFFER_VECTOR, *PDMA_COMMON_BUFFER_VECTOR;

typedef enum _DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_TYPE {
  CommonBufferConfigTypeLogicalAddressLimits,
  CommonBufferConfigTypeSubSection,
  CommonBufferConfigTypeHardwareAccessPermissions,
  CommonBufferConfigTypeMax
} DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_TYPE;

typedef enum _DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_ACCESS_TYPE {
  CommonBufferHardwareAccessReadOnly,
  CommonBufferHardwareAccessWriteOnly,
  CommonBufferHardwareAccessReadWrite,
  CommonBufferHardwareAccessMax
} DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_ACCESS_TYPE;

typedef struct _DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION {
  DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_TYPE ConfigType;
  union {
    struct {
      PHYSICAL_ADDRESS Minimum;
      PHYSICAL_ADDRESS Maximum;
    } LogicalAddressLimits;
    struct {
      ULONGLONG Offset;
      ULONG Length;
    } SubSection;
    DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION_ACCESS_TYPE HardwareAccessType;
    ULONGLONG Reserved[4];
  };
} DMA_COMMON_BUFFER_EXTENDED_CONFIGURATION, *PDMA_COMMON_BUFFER_EXTENDED_CONFIGURATION;

/* ---- the routine types, in DMA_OPERATIONS order --------------------------- */
typedef NTSTATUS (*PGET_DMA_ADAPTER_INFO)(
  PDMA_ADAPTER DmaAdapter, PDMA_ADAPTER_INFO AdapterInfo);

typedef NTSTATUS (*PGET_DMA_TRANSFER_INFO)(
  PDMA_ADAPTER DmaAdapter, PMDL Mdl, ULONGLONG Offset, ULONG Length,
  BOOLEAN WriteOnly, PDMA_TRANSFER_INFO TransferInfo);

typedef NTSTATUS (*PINITIALIZE_DMA_TRANSFER_CONTEXT)(
  PDMA_ADAPTER DmaAdapter, PVOID DmaTransferContext);

typedef PVOID (*PALLOCATE_COMMON_BUFFER_EX)(
  PDMA_ADAPTER DmaAdapter, PPHYSICAL_ADDRESS MaximumAddress, ULONG Length,
  PPHYSICAL_ADDRESS LogicalAddress, BOOLEAN CacheEnabled, NODE_REQUIREMENT PreferredNode);

typedef NTSTATUS (*PALLOCATE_ADAPTER_CHANNEL_EX)(
  PDMA_ADAPTER DmaAdapter, PDEVICE_OBJECT DeviceObject, PVOID DmaTransferContext,
  ULONG NumberOfMapRegisters, ULONG Flags, PDRIVER_CONTROL ExecutionRoutine,
  PVOID ExecutionContext, PVOID *MapRegisterBase);

typedef NTSTATUS (*PCONFIGURE_ADAPTER_CHANNEL)(
  PDMA_ADAPTER DmaAdapter, ULONG FunctionNumber, PVOID Context);

typedef BOOLEAN (*PCANCEL_ADAPTER_CHANNEL)(
  PDMA_ADAPTER DmaAdapter, PDEVICE_OBJECT DeviceObject, PVOID DmaTransferContext);

typedef NTSTATUS (*PMAP_TRANSFER_EX)(
  PDMA_ADAPTER DmaAdapter, PMDL Mdl, PVOID MapRegisterBase, ULONGLONG Offset,
  ULONG DeviceOffset, PULONG Length, BOOLEAN WriteToDevice,
  PSCATTER_GATHER_LIST ScatterGatherBuffer, ULONG ScatterGatherBufferLength,
  PDMA_COMPLETION_ROUTINE DmaCompletionRoutine, PVOID CompletionContext);

typedef NTSTATUS (*PGET_SCATTER_GATHER_LIST_EX)(
  PDMA_ADAPTER DmaAdapter, PDEVICE_OBJECT DeviceObject, PVOID DmaTransferContext,
  PMDL Mdl, ULONGLONG Offset, ULONG Length, ULONG Flags,
  PDRIVER_LIST_CONTROL ExecutionRoutine, PVOID Context, BOOLEAN WriteToDevice,
  PDMA_COMPLETION_ROUTINE DmaCompletionRoutine, PVOID CompletionContext,
  PSCATTER_GATHER_LIST *ScatterGatherList);

typedef NTSTATUS (*PBUILD_SCATTER_GATHER_LIST_EX)(
  PDMA_ADAPTER DmaAdapter, PDEVICE_OBJECT DeviceObject, PVOID DmaTransferContext,
  PMDL Mdl, ULONGLONG Offset, ULONG Length, ULONG Flags,
  PDRIVER_LIST_CONTROL ExecutionRoutine, PVOID Context, BOOLEAN WriteToDevice,
  PVOID ScatterGatherBuffer, ULONG ScatterGatherLength,
  PDMA_COMPLETION_ROUTINE DmaCompletionRoutine, PVOID CompletionContext,
  PVOID ScatterGatherList);

typedef NTSTATUS (*PFLUSH_ADAPTER_BUFFERS_EX)(
  PDMA_ADAPTER DmaAdapter, PMDL Mdl, PVOID MapRegisterBase, ULONGLONG Offset,
  ULONG Length, BOOLEAN WriteToDevice);

typedef VOID (*PFREE_ADAPTER_OBJECT)(
  PDMA_ADAPTER DmaAdapter, IO_ALLOCATION_ACTION AllocationAction);

typedef NTSTATUS (*PCANCEL_MAPPED_TRANSFER)(
  PDMA_ADAPTER DmaAdapter, PVOID DmaTransferContext);

typedef NTSTATUS (*PALLOCATE_DOMAIN_COMMON_BUFFER)(
  PDMA_ADAPTER DmaAdapter, HANDLE DomainHandle, PPHYSICAL_ADDRESS MaximumAddress,
  ULONG Length, ULONG Flags, MEMORY_CACHING_TYPE *CacheType,
  NODE_REQUIREMENT PreferredNode, PPHYSICAL_ADDRESS LogicalAddress,
  PVOID *VirtualAddress);

typedef NTSTATUS (*PFLUSH_DMA_BUFFER)(
  PDMA_ADAPTER DmaAdapter, PMDL Mdl, BOOLEAN ReadOperation);

typedef NTSTATUS (*PJOIN_DMA_DOMAIN)(PDMA_ADAPTER DmaAdapter, HANDLE DomainHandle);

typedef NTSTATUS (*PLEAVE_DMA_DOMAIN)(PDMA_ADAPTER DmaAdapter);

typedef HANDLE (*PGET_DMA_DOMAIN)(PDMA_ADAPTER DmaAdapter);

typedef PVOID (*PALLOCATE_COMMON_BUFFER_WITH_BOUNDS)(
  PDMA_ADAPTER DmaAdapter, PPHYSICAL_ADDRESS MinimumAddress,
  PPHYSICAL_ADDRESS MaximumAddress, ULONG Length, ULONG Flags,
  MEMORY_CACHING_TYPE *CacheType, NODE_REQUIREMENT PreferredNode,
  PPHYSICAL_ADDRESS LogicalAddress);

typedef NTSTATUS (*PALLOCATE_COMMON_BUFFER_VECTOR)(
  PDMA_ADAPTER DmaAdapter, PHYSICAL_ADDRESS LowAddress, PHYSICAL_ADDRESS HighAddress,
  MEMORY_CACHING_TYPE CacheType, ULONG IdealNode, ULONG Flags,
  ULONG NumberOfElements, ULONGLONG SizeOfElements,
  PDMA_COMMON_BUFFER_VECTOR *VectorOut);

typedef VOID (*PGET_COMMON_BUFFER_FROM_VECTOR_BY_INDEX)(
  PDMA_ADAPTER DmaAdapter, PDMA_COMMON_BUFFER_VECTOR Vector, ULONG Index,
  PVOID *VirtualAddressOut, PPHYSICAL_ADDRESS LogicalAddressOut);

typedef VOID (*PFREE_COMMON_BUFFER_FROM_VECTOR)(
  PDMA_ADAPTER DmaAdapter, PDMA_COMMON_BUFFER_VECTOR Vector, ULONG Index);

typedef VOID (*PFREE_COMMON_BUFFER_VECTOR)(
  PDMA_ADAPTER DmaAdapter, PDMA_COMMON_BUFFER_VECTOR Vector);

typedef NTSTATUS (*PCREATE_COMMON_BUFFER_FROM_MDL)(
  PDMA_ADAPTER DmaAdapter, PMDL Mdl,
  PDMA_COMMON_BUFFER_EXTENDED_CONFIGURATION ExtendedConfigs,
  ULONG ExtendedConfigsCount, PPHYSICAL_ADDRESS LogicalAddress);

/* The members version 2 and 3 add after BuildMdlFromScatterGatherList. */
#define EDUDMA_DMA_OPERATIONS_V2_V3_MEMBERS                               \
  PGET_DMA_ADAPTER_INFO GetDmaAdapterInfo;                                 \
  PGET_DMA_TRANSFER_INFO GetDmaTransferInfo;                               \
  PINITIALIZE_DMA_TRANSFER_CONTEXT InitializeDmaTransferContext;           \
  PALLOCATE_COMMON_BUFFER_EX AllocateCommonBufferEx;                       \
  PALLOCATE_ADAPTER_CHANNEL_EX AllocateAdapterChannelEx;                   \
  PCONFIGURE_ADAPTER_CHANNEL ConfigureAdapterChannel;                      \
  PCANCEL_ADAPTER_CHANNEL CancelAdapterChannel;                            \
  PMAP_TRANSFER_EX MapTransferEx;                                          \
  PGET_SCATTER_GATHER_LIST_EX GetScatterGatherListEx;                      \
  PBUILD_SCATTER_GATHER_LIST_EX BuildScatterGatherListEx;                  \
  PFLUSH_ADAPTER_BUFFERS_EX FlushAdapterBuffersEx;                         \
  PFREE_ADAPTER_OBJECT FreeAdapterObject;                                  \
  PCANCEL_MAPPED_TRANSFER CancelMappedTransfer;                            \
  PALLOCATE_DOMAIN_COMMON_BUFFER AllocateDomainCommonBuffer;               \
  PFLUSH_DMA_BUFFER FlushDmaBuffer;                                        \
  PJOIN_DMA_DOMAIN JoinDmaDomain;                                          \
  PLEAVE_DMA_DOMAIN LeaveDmaDomain;                                        \
  PGET_DMA_DOMAIN GetDmaDomain;                                            \
  PALLOCATE_COMMON_BUFFER_WITH_BOUNDS AllocateCommonBufferWithBounds;      \
  PALLOCATE_COMMON_BUFFER_VECTOR AllocateCommonBufferVector;               \
  PGET_COMMON_BUFFER_FROM_VECTOR_BY_INDEX GetCommonBufferFromVectorByIndex; \
  PFREE_COMMON_BUFFER_FROM_VECTOR FreeCommonBufferFromVector;              \
  PFREE_COMMON_BUFFER_VECTOR FreeCommonBufferVector;                       \
  PCREATE_COMMON_BUFFER_FROM_MDL CreateCommonBufferFromMdl;
